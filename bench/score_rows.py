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
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hparams  # noqa: E402
import tune_unlearning  # noqa: E402
import tuning  # noqa: E402
from anti_sample import AntiSampleParams, ForgetTargetWarning, unlearn  # noqa: E402
from datasets import get_dataset_spec  # noqa: E402
from train_utils import evaluate  # noqa: E402


def scores(experiment: tuning.TuningExperiment, params: AntiSampleParams) -> dict[str, list[float]]:
    """Per class: retain accuracy on the validation split, forget accuracy on the class's validation
    and training samples, epochs run."""
    result: dict[str, list[float]] = {"retain": [], "forget_validation": [], "forget_train": [], "epochs": []}
    for forget_class in range(experiment.spec.num_classes):
        inputs = experiment.unlearn_inputs([forget_class])
        model = experiment.model_from(experiment.original_state)
        with warnings.catch_warnings():  # a class that misses the target shows in the numbers
            warnings.simplefilter("ignore", ForgetTargetWarning)
            _, record = unlearn(model, inputs.forget, inputs.retain, inputs.pool, params, generator=inputs.generator,
                                noise_generator=inputs.device_generator, progress=False, speed=inputs.speed)
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
    experiment = tuning.TuningExperiment(config)  # trains (or loads) the tuning original model
    for name, fields in candidates.items():
        params = dataclasses.replace(AntiSampleParams.from_run(row, unlearn_mode=config.unlearn_mode), **fields)
        start = time.perf_counter()
        s = scores(experiment, params)
        n = len(s["retain"])
        print(f"{name:28} retain (validation) {sum(s['retain']) / n:6.2f} (lowest {min(s['retain']):.2f})  "
              f"forget (validation) {sum(s['forget_validation']) / n:5.2f} (worst {max(s['forget_validation']):.2f})  "
              f"forget (training, worst) {max(s['forget_train']):.2f}  epochs {s['epochs']}  "
              f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
