"""Edge aggregation cost of robust pipelines at K = 10 uploads of the BMFL CNN
(d = 21,840) with the test-set evaluator on a 300-image MNIST-5k test set (the
filters' accuracy scoring is part of the cost), timed interleaved in one run against
BMFL's pipeline (self-reliability filter → repeated-median reweighting, the default
before the DP envelope was put in front of it), beside the default as an edge closes it
(leave-out testing judged at a fifth of the step, docs/algorithms.md §8.3, then each
vehicle's standing, §8.10: ``aggregate_edge`` with the standings of a round in which
some vehicles already have one) and the ones before it. Issue 17 asks that the new
default cost at most 1.5× that. The uploads carry exactly the DP noise of ``TRAINING`` on
``SAMPLES`` examples, so the envelope keeps them all and every pipeline aggregates ten.

    python -m bench.pipeline_cost [--repeats 7]
"""

from __future__ import annotations

import argparse

import torch

from bench.common import Row, interleave, median, print_rows
from bmfl.aggregation import compose, get_aggregator
from bmfl.data import load_dataset
from bmfl.filters import batched_accuracy_evaluator, get_filter
from bmfl.filters.dp_floor import noise_variance
from bmfl.models import create_model
from bmfl.params import flatten
from bmfl.rounds.edge import PublisherTestLoss, aggregate_edge
from bmfl.rounds.standing import StandingRule, Standings
from bmfl.task import TrainingSpec

K = 10
TEST_IMAGES = 300
SAMPLES = 200
TRAINING = TrainingSpec(epochs=1, max_steps=3, batch_size=64, lr=0.3, momentum=0.5, noise_multiplier=2.0)
BASE = "self_reliability+reweight"
DEFAULT = "dp_envelope+signal_median(majority mean)+leave_out(step 0.2, escalation 2.5)+noise_weighted+standing (default)"
STANDINGS = Standings(StandingRule(), {0: 1.5, 3: 4.0})
"""Standings before the round: two vehicles with some, none over the limit (all ten aggregated)."""


def default_edges(test_loss):
    """The default's filters and rule (its standings are applied by ``aggregate_edge``)."""
    return compose(
        get_aggregator("noise_weighted", training=TRAINING), get_filter("dp_envelope", training=TRAINING),
        get_filter("signal_median", training=TRAINING, clip=False, centre="majority_mean"),
        get_filter("leave_out", test_loss=test_loss, training=TRAINING, step=0.2, escalation=2.5))


def pipelines(evaluate, test_loss) -> dict:
    return {
        BASE: compose(get_aggregator("reweight"), get_filter("self_reliability", evaluate=evaluate)),
        "dp_envelope+self_reliability+reweight (the default before noise_weighted)": compose(
            get_aggregator("reweight"), get_filter("dp_envelope", training=TRAINING),
            get_filter("self_reliability", evaluate=evaluate)),
        DEFAULT: default_edges(test_loss),
        "dp_envelope+signal_median(majority mean)+leave_out(step 0.2, escalation 2.5)+noise_weighted (the default before)":
            default_edges(test_loss),
        "dp_envelope+signal_median(majority mean)+self_reliability+noise_weighted (before leave-out testing)": compose(
            get_aggregator("noise_weighted", training=TRAINING), get_filter("dp_envelope", training=TRAINING),
            get_filter("signal_median", training=TRAINING, clip=False, centre="majority_mean"),
            get_filter("self_reliability", evaluate=evaluate)),
        "dp_envelope+signal_median(majority mean)+leave_out+noise_weighted (private_leave_out)": compose(
            get_aggregator("noise_weighted", training=TRAINING), get_filter("dp_envelope", training=TRAINING),
            get_filter("signal_median", training=TRAINING, clip=False, centre="majority_mean"),
            get_filter("leave_out", test_loss=test_loss, training=TRAINING)),
        "accuracy_test+norm_clip+reweight": compose(
            get_aggregator("reweight"), get_filter("accuracy_test", evaluate=evaluate, test_size=TEST_IMAGES),
            get_filter("norm_clip")),
        "accuracy_test+norm_clip+fedavg": compose(
            get_aggregator("fedavg"), get_filter("accuracy_test", evaluate=evaluate, test_size=TEST_IMAGES),
            get_filter("norm_clip")),
        "flame": get_aggregator("flame"),
        "dnc+fedavg": compose(get_aggregator("fedavg"), get_filter("dnc")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model("bmfl_cnn")
    _, test = load_dataset("mnist_5k")
    reference = flatten(model.state_dict())
    updates = reference + noise_variance(TRAINING.local(), SAMPLES) ** 0.5 * torch.randn(K, reference.numel())
    sizes = torch.full((K,), float(SAMPLES), dtype=torch.float64)
    edge_test = test.subset(torch.arange(TEST_IMAGES))
    rules = pipelines(batched_accuracy_evaluator(model, edge_test, memo=0), PublisherTestLoss(model, edge_test))
    uploads = dict(enumerate(updates))
    counts = dict.fromkeys(uploads, SAMPLES)
    calls = {name: (lambda r=rule: r(updates, sizes, reference, round_index=2)) for name, rule in rules.items()}
    calls[DEFAULT] = lambda r=rules[DEFAULT]: aggregate_edge(r, uploads, counts, reference, 2, standing=STANDINGS)
    times = interleave(calls, args.repeats)
    base = median(times[BASE])
    rows = [Row("pipeline_cost", name, median(t), BASE, base, "s", "overhead",
                f"K = {K}, d = {reference.numel():,}, {TEST_IMAGES} test images") for name, t in times.items()
            if name != BASE]
    print_rows("Edge pipeline cost vs BMFL's pipeline (the previous default)", rows)


if __name__ == "__main__":
    main()
