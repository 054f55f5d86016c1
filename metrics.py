"""Measurements beyond accuracy: the authors' per-epoch model selection on a random share of
the test set (`BestEpoch`), and membership-inference efficacy (`mia_efficacy`, SalUn's)."""
from __future__ import annotations

import torch
from torch import nn

from datasets import Split
from train_utils import EVAL_BATCH_SIZE, accuracy, predict

SELECT_FRACTION = 0.3  # docs/METHOD.md "Model selection": a fresh random 30% of the test set each epoch
# The MIA's classifier, as in SalUn's code: an RBF SVC with C = 3 and gamma "auto" (1 / features)
MIA_SVC = {"C": 3, "gamma": "auto", "kernel": "rbf"}
MIA_DRAWS = 5  # shadow-set draws averaged by mia_efficacy


class BestEpoch:
    """The authors' model selection (docs/METHOD.md "Model selection"), as an `after_epoch` callback:
    after every epoch, the accuracy on a fresh seeded random `fraction` of `data` (their test
    set: this looks at test data); keeps a copy of the weights of the best epoch (the first on
    ties). `epoch` and `state` are the selection; `accuracies` has every epoch's value."""

    def __init__(self, model: nn.Module, data: Split, generator: torch.Generator,
                 fraction: float = SELECT_FRACTION):
        self.model, self.data, self.generator = model, data, generator
        self.count = max(1, round(len(data) * fraction))
        self.epoch, self.state, self.accuracies = 0, None, []

    def __call__(self, epoch: int) -> None:
        index = torch.randperm(len(self.data), generator=self.generator)[:self.count].to(self.data.labels.device)
        value = accuracy(predict(self.model, self.data.images[index]) == self.data.labels[index])
        self.accuracies.append(value)
        if value > max(self.accuracies[:-1], default=-1.0):
            self.epoch = epoch
            self.state = {name: t.detach().clone() for name, t in self.model.state_dict().items()}


@torch.no_grad()
def true_label_probability(model: nn.Module, data: Split) -> torch.Tensor:
    """softmax(model(x))[y] for every sample, on the CPU."""
    model.eval()
    return torch.cat([model(x).softmax(1).gather(1, y[:, None]).squeeze(1).cpu()
                      for x, y in zip(data.images.split(EVAL_BATCH_SIZE), data.labels.split(EVAL_BATCH_SIZE))])


def mia_efficacy(model: nn.Module, retain_train: Split, retain_test: Split, forget_train: Split,
                 generator: torch.Generator, draws: int = MIA_DRAWS) -> float:
    """Membership inference as in SalUn (Fan et al., ICLR 2024), in percent: an SVC (`MIA_SVC`) on
    the true-label softmax probability, fit on retain training samples (members; SalUn uses the
    unlearner's retain set) against as many retain-class test samples (non-members); efficacy is
    the share of forget-class training samples it calls non-members. 100: the model treats them
    as unseen.

    Averaged over `draws` seeded draws of the equal-count shadow sets (ours: SalUn fits once).
    When the model scores members and non-members alike, the fit is near a coin flip where the
    forget samples lie (true-label probability near 0), and one draw can swing it 0 <-> 100."""
    from sklearn.svm import SVC

    members, others = true_label_probability(model, retain_train), true_label_probability(model, retain_test)
    forget = true_label_probability(model, forget_train)[:, None].numpy()
    n = min(len(members), len(others))
    is_member = torch.cat([torch.ones(n), torch.zeros(n)]).numpy()
    non_member_share = 0.0
    for _ in range(draws):
        features = torch.cat([members[torch.randperm(len(members), generator=generator)[:n]],
                              others[torch.randperm(len(others), generator=generator)[:n]]])
        classifier = SVC(**MIA_SVC).fit(features[:, None].numpy(), is_member)
        non_member_share += float((classifier.predict(forget) == 0).mean()) / draws
    return 100.0 * non_member_share
