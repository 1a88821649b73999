"""`cpt`: continue pretraining from a checkpoint (pretrain, upcycle or import output) on new data."""

from factory.train.stage import plan_training, run_training


def plan(cfg):
    return plan_training(cfg, "cpt")


def run(cfg, plan, manifest):
    run_training(cfg, plan, manifest, "cpt")
