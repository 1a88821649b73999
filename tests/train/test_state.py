"""TrainState: what a checkpoint records about a run, and how resumed and continued runs read it back."""

from factory.train.state import TrainState


def test_meta_round_trips_through_a_resume():
    state = TrainState(iteration=0, tokens_before=1000, lineage=[{"stage": "pretrain"}],
                       data={"phase": "main", "seed": 3})
    for _ in range(4):
        state.advance(global_batch_size=8)
    meta = state.meta("cpt", tokens_per_iter=256, lr=1e-4, phase="main")
    assert meta["consumed_samples"] == 32 and meta["tokens_seen"] == 1000 + 4 * 256
    back = TrainState.resumed(4, meta["consumed_samples"], meta)
    assert back == state


def test_a_continued_run_carries_tokens_and_appends_its_source_to_the_lineage():
    source = {"stage": "upcycle", "tokens_seen": 5000, "lineage": [{"stage": "pretrain", "tokens_seen": 5000}],
              "upcycle": {"mode": "copy"}}
    state = TrainState.started_from("/ckpt/iter_0000000", source)
    assert state.iteration == 0 and state.tokens_before == 5000
    assert state.lineage == [{"stage": "pretrain", "tokens_seen": 5000},
                             {"stage": "upcycle", "checkpoint": "/ckpt/iter_0000000", "tokens_seen": 5000,
                              "upcycle": {"mode": "copy"}}]
