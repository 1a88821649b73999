"""TrainState: what a checkpoint records about a run, and how resumed and continued runs read it back."""

from factory.train.checkpoint_meta import CheckpointMeta, LineageStep, UpcycleRecord
from factory.train.state import TrainState


def test_meta_round_trips_through_a_resume():
    state = TrainState(iteration=0, tokens_before=1000, lineage=(LineageStep("pretrain", "/p/iter_0000002", 1000, 2),),
                       data={"phase": "main", "seed": 3})
    for _ in range(4):
        state.advance(global_batch_size=8)
    meta = state.meta("cpt", tokens_per_iter=256, final_lr=1e-4, peak_lr=1e-3, min_lr=1e-5, phase="main")
    assert meta.consumed_samples == 32 and meta.run_tokens == 4 * 256 and meta.lineage_tokens == 1000 + 4 * 256
    assert meta.tokens_before == 1000
    back = TrainState.resumed(4, CheckpointMeta.from_dict(meta.to_dict()))
    assert back == state


def test_a_continued_run_carries_tokens_and_appends_its_source_to_the_lineage():
    upcycle = UpcycleRecord(mode="copy", source="/dense/iter_0000007", source_iteration=7)
    pretrain = LineageStep("pretrain", "/dense/iter_0000007", 5000, 7)
    source = CheckpointMeta(stage="upcycle", lineage_tokens=5000, run_tokens=0, lineage=(pretrain,), upcycle=upcycle)
    state = TrainState.started_from(source, "/ckpt/iter_0000000", 0)
    assert state.iteration == 0 and state.tokens_before == 5000
    assert state.lineage == (pretrain, LineageStep("upcycle", "/ckpt/iter_0000000", 5000, 0, upcycle))
    for _ in range(2):
        state.advance(global_batch_size=4)
    meta = state.meta("cpt", tokens_per_iter=100, final_lr=1e-4, peak_lr=1e-4, min_lr=1e-5, phase="main")
    assert (meta.lineage_tokens, meta.run_tokens) == (5200, 200)
