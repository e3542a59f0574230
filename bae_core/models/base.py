"""The contract every online model keeps, so one check suite (tests/test_model_contract.py)
runs over all of them.

- Hyperparameters are stored exactly as given to ``__init__`` (``params()`` returns them);
  learned state lives in numpy arrays (``state()``), never in per-series Python objects.
- ``learn(batch)`` takes a dict of equal-length arrays (one row per observation, in time
  order); an empty batch changes nothing.
- ``predict(query)`` answers from the state only (forecasts, scores or top-k) and never
  changes it.
- ``state()`` returns copies; ``restore(state)`` on a model built with the same params
  makes it answer exactly as the original.
- ``check_cases()`` gives the suite a few small parameter sets with a batch and a query
  for each: (params, batch, query).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Model(ABC):
    @abstractmethod
    def params(self) -> dict: ...

    @abstractmethod
    def learn(self, batch: dict[str, np.ndarray]) -> None: ...

    @abstractmethod
    def predict(self, query: dict) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def restore(self, state: dict[str, np.ndarray]) -> None: ...

    @classmethod
    @abstractmethod
    def check_cases(cls) -> list[tuple[dict, dict[str, np.ndarray], dict]]: ...

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
