"""One check suite over every online model in bae_core.models (River's habit): snapshot
round trip, determinism, learn-then-predict, empty batch, single observation."""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import bae_core.models
from bae_core.models.base import Model


def all_models() -> list[type[Model]]:
    for m in pkgutil.iter_modules(bae_core.models.__path__):
        importlib.import_module(f"bae_core.models.{m.name}")
    found, todo = [], list(Model.__subclasses__())
    while todo:
        c = todo.pop()
        todo += c.__subclasses__()
        if "check_cases" in vars(c):
            found.append(c)
    return sorted(found, key=lambda c: c.__name__)


CASES = [pytest.param(cls, *case, id=f"{cls.__name__}-{i}")
         for cls in all_models() for i, case in enumerate(cls.check_cases())]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True) for k in a)


def first_rows(batch: dict, n: int) -> dict:
    return {k: v[:n] for k, v in batch.items()}


@pytest.mark.parametrize("cls,params,batch,query", CASES)
def test_state_round_trip(cls, params, batch, query):
    m = cls(**params)
    m.learn(batch)
    r = cls(**params)
    r.restore(m.state())
    assert same(m.predict(query), r.predict(query))
    m.learn(batch)
    r.learn(batch)
    assert same(m.predict(query), r.predict(query))


@pytest.mark.parametrize("cls,params,batch,query", CASES)
def test_deterministic_and_predict_is_pure(cls, params, batch, query):
    a, b = cls(**params), cls(**params)
    a.learn(batch)
    b.learn(batch)
    pa = a.predict(query)
    assert same(pa, b.predict(query))
    assert same(pa, a.predict(query))  # predicting did not change the state
    assert same(a.state(), b.state())


@pytest.mark.parametrize("cls,params,batch,query", CASES)
def test_learning_changes_the_answer_and_empty_batch_does_not(cls, params, batch, query):
    m = cls(**params)
    before = m.predict(query)
    m.learn(first_rows(batch, 0))
    assert same(before, m.predict(query))
    m.learn(batch)
    assert not same(before, m.predict(query))


@pytest.mark.parametrize("cls,params,batch,query", CASES)
def test_single_observation(cls, params, batch, query):
    m = cls(**params)
    m.learn(first_rows(batch, 1))
    out = m.predict(query)
    assert out and all(np.all(np.isfinite(np.asarray(v, float)) | np.isnan(np.asarray(v, float)))
                       for v in out.values())


@pytest.mark.parametrize("cls,params,batch,query", CASES)
def test_params_are_kept_as_given(cls, params, batch, query):
    m = cls(**params)
    assert m.params() == params
    assert repr(m).startswith(cls.__name__ + "(")


def test_every_model_family_is_checked():
    assert len(all_models()) >= 1
