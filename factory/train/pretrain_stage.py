"""`pretrain`: train a dense or MoE model from scratch on the packed blend."""

from factory.train.stage import plan_training, run_training


def plan(cfg):
    return plan_training(cfg, "pretrain")


def run(cfg, plan, manifest):
    run_training(cfg, plan, manifest, "pretrain")
