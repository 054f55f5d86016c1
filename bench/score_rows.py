"""Score candidate settings of the anti-sample method on the tuner's validation split, over every
class and over seeds, never the test set: how the defaults of SmallCNN's single-class row were
chosen (README "Deviations").

    .venv/bin/python bench/score_rows.py CANDIDATES.json [--seeds 100,101,102] [tune_unlearning.py's data flags]
    e.g. bench/score_rows.py bench/default_row_candidates.json --seeds 100,101,102 --cache-dir checkpoints

CANDIDATES.json maps a name to `AntiSampleParams` fields, each over the model's own single-class
row (`hparams.resolve`), e.g. {"default": {}, "no repair": {"repair_epochs": 0}}. At each seed
(default: the tuner's --seed) the tuning original model (trained on the training split less the
validation split, its last epoch) forgets each class in turn, with the same seeded inputs as a
tuner trial. Printed per candidate, over every seed and class: the retain accuracy on the
validation split (mean and lowest), the forget class's accuracy on its held-out validation samples
(mean and worst, with its class and seed) and on its training samples, the samples the forget
target checks (worst), the classes that ran to the epoch cap, and the most epochs any class ran.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hparams  # noqa: E402
import tune_unlearning  # noqa: E402
import tuning  # noqa: E402
from anti_sample import AntiSampleParams  # noqa: E402
from datasets import get_dataset_spec  # noqa: E402
from devices import Stopwatch  # noqa: E402
from experiment import Experiment  # noqa: E402
from train_utils import evaluate  # noqa: E402


def scores(tuner: tuning.Tuner, params: AntiSampleParams) -> dict[str, list[float]]:
    """Per class: retain accuracy on the validation split, forget accuracy on the class's validation
    and training samples, epochs run."""
    result: dict[str, list[float]] = {"retain": [], "forget_validation": [], "forget_train": [], "epochs": []}
    experiment = tuner.experiment
    for forget_class in range(experiment.spec.num_classes):
        model, record = tuner.unlearn_class(forget_class, params)
        validation = evaluate(model, experiment.test_data, [forget_class])  # the tuner's "test" is validation
        train = evaluate(model, experiment.train_data.of_classes([forget_class]), [forget_class])
        for key, value in [("retain", validation["retain"]), ("forget_validation", validation["forget"]),
                           ("forget_train", train["forget"]), ("epochs", record.epochs)]:
            result[key].append(value)
    return result


def take_seeds(argv: list[str]) -> tuple[list[int] | None, list[str]]:
    """`--seeds 100,101,102` out of argv (the tuner's own flags have one --seed)."""
    if "--seeds" not in argv:
        return None, argv
    i = argv.index("--seeds")
    return [int(seed) for seed in argv[i + 1].split(",")], argv[:i] + argv[i + 2:]


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    candidates = json.loads(Path(argv[0]).read_text())
    seeds, flags = take_seeds(argv[1:])
    args = tune_unlearning.get_args_parser().parse_args(["--no-progress", *flags])
    config, _ = tune_unlearning.resolve(args)
    row = hparams.resolve(config.model, get_dataset_spec(config.dataset).hparams_as, config.retain_percent)
    tuners = {seed: tuning.Tuner(Experiment(one, tuning.tuning_data(one)), classes=[])
              for seed in seeds or [config.seed] for one in [dataclasses.replace(config, seed=seed)]}
    for name, fields in candidates.items():
        params = dataclasses.replace(AntiSampleParams.from_run(row, unlearn_mode=config.unlearn_mode), **fields)
        with Stopwatch() as clock:
            by_seed = {seed: scores(tuner, params) for seed, tuner in tuners.items()}
        every = {key: [v for s in by_seed.values() for v in s[key]] for key in next(iter(by_seed.values()))}
        n = len(every["retain"])
        worst_seed, worst = max(by_seed.items(), key=lambda item: max(item[1]["forget_validation"]))
        worst_class = worst["forget_validation"].index(max(worst["forget_validation"]))
        capped = [f"{c}@{seed}" for seed, s in by_seed.items() for c, e in enumerate(s["epochs"])
                  if params.forget_target is not None and e >= params.epoch_cap]
        print(f"{name:28} retain (validation) {sum(every['retain']) / n:6.2f} (lowest {min(every['retain']):.2f})  "
              f"forget (validation) {sum(every['forget_validation']) / n:5.2f} (worst "
              f"{max(every['forget_validation']):.2f}, class {worst_class} seed {worst_seed})  "
              f"forget (training, worst) {max(every['forget_train']):.2f}  at the cap: {' '.join(capped) or 'none'}  "
              f"epochs at most {max(every['epochs'])}  {clock.seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
