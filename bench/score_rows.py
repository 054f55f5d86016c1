"""Score candidate settings of the anti-sample method on the tuner's validation split, over every
class, never the test set: how the defaults of SmallCNN's single-class row were chosen (README
"Deviations").

    .venv/bin/python bench/score_rows.py CANDIDATES.json [tune_unlearning.py's data flags]
    e.g. bench/score_rows.py bench/default_row_candidates.json --cache-dir checkpoints

CANDIDATES.json maps a name to `AntiSampleParams` fields, each over the model's own single-class
row (`hparams.resolve`), e.g. {"default": {}, "no repair": {"repair_epochs": 0}}. The tuning
original model (trained on the training split less the validation split, its last epoch) forgets
each class in turn, with the same seeded inputs as a tuner trial. Printed per candidate: the
retain accuracy on the validation split (mean and lowest over classes), the forget class's
accuracy on its held-out validation samples (mean and worst) and on its training samples, the
samples the forget target checks (worst), and the epochs each class ran.
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


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    candidates = json.loads(Path(argv[0]).read_text())
    args = tune_unlearning.get_args_parser().parse_args(["--no-progress", *argv[1:]])
    config, _ = tune_unlearning.resolve(args)
    row = hparams.resolve(config.model, get_dataset_spec(config.dataset).hparams_as, config.retain_percent)
    tuner = tuning.Tuner(Experiment(config, tuning.tuning_data(config)), classes=[])
    for name, fields in candidates.items():
        params = dataclasses.replace(AntiSampleParams.from_run(row, unlearn_mode=config.unlearn_mode), **fields)
        with Stopwatch() as clock:
            s = scores(tuner, params)
        n = len(s["retain"])
        print(f"{name:28} retain (validation) {sum(s['retain']) / n:6.2f} (lowest {min(s['retain']):.2f})  "
              f"forget (validation) {sum(s['forget_validation']) / n:5.2f} (worst {max(s['forget_validation']):.2f})  "
              f"forget (training, worst) {max(s['forget_train']):.2f}  epochs {s['epochs']}  "
              f"{clock.seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
