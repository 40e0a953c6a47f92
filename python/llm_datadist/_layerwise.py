# SPDX-License-Identifier: Apache-2.0
"""The runner behind CacheManager.transfer_cache_async: a layer-wise push in the background.

Two threads per task. The synchronizer thread calls the user's
`LayerSynchronizer.synchronize_layer(i, timeout)` for the layers to send, in ascending order,
and hands each answer over. The push thread waits for layer i's answer, then pushes layer i to
every destination that includes it, while the caller computes layer i+1. The native push
releases the GIL, so the caller's Python keeps running during the copy.

The synchronizer runs on a thread of its own because it is user code that may never return:
the push thread waits for each answer with a deadline, so the task always ends, with
LLM_TIMEOUT for the transfers that needed the missing layer. A thread left blocked in such a
call is a daemon and is told to stop before its next call.

Upstream's rules for the results are kept: a destination's code becomes LLM_SUCCESS when its
last layer was sent; a synchronizer that answers False fails the destinations that include the
layer with LLM_PARAM_INVALID; the first failure stops the whole task, and destinations that
neither finished nor failed by then report None.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .status import LLMException, LLMStatusCode

__all__ = ["LayerDestination", "LayerwisePush"]

logger = logging.getLogger("llm_datadist")

# Added to the synchronizer's timeout before a layer counts as never ready: the answer has to
# cross a thread and a busy machine may delay it; the timeout itself is the user's promise.
_SYNC_GRACE_S = 0.5

_task_ids = itertools.count(1)


@dataclass(frozen=True)
class LayerDestination:
    """One transfer config, ready to run: the source layers it takes, where each goes, and
    how to send one layer (raises LLMException on failure)."""

    name: str
    src_layers: range
    dst_layer_of: Callable[[int], int]
    send: Callable[[int, int], None]


class LayerwisePush:
    """One transfer_cache_async task. `start()` returns one future per destination."""

    def __init__(self, destinations: Sequence[LayerDestination], synchronizer: Any,
                 sync_timeout_ms: int) -> None:
        self._destinations = list(destinations)
        self._synchronizer = synchronizer
        self._sync_timeout_ms = sync_timeout_ms
        self._layers = sorted(set().union(*(d.src_layers for d in self._destinations)))
        self._answers: "queue.Queue[Tuple[int, Any]]" = queue.Queue()
        self._stop = threading.Event()
        self._task_id = next(_task_ids)
        self._futures: List["concurrent.futures.Future[Any]"] = [
            concurrent.futures.Future() for _ in self._destinations]

    def start(self) -> List["concurrent.futures.Future[Any]"]:
        for target, role in ((self._synchronize_layers, "sync"), (self._push_layers, "push")):
            threading.Thread(target=target, name=f"llmdd-layerwise-{self._task_id}-{role}", daemon=True).start()
        logger.info("[transfer_cache_async] task %d started: %d destination(s), layers %s",
                    self._task_id, len(self._destinations), _describe_layers(self._layers))
        return list(self._futures)

    # -- the synchronizer thread ------------------------------------------------------------
    def _synchronize_layers(self) -> None:
        for layer in self._layers:
            if self._stop.is_set():
                return
            try:
                answer: Any = bool(self._synchronizer.synchronize_layer(layer, self._sync_timeout_ms))
            except BaseException as exc:  # noqa: BLE001 - user code; reported as the layer's failure
                answer = exc
            self._answers.put((layer, answer))
            if answer is not True:
                return

    def _wait_layer(self, layer: int) -> Tuple[Optional[LLMStatusCode], str]:
        """(None, "") when layer `layer` is ready, else the failure code and why."""
        try:
            got, answer = self._answers.get(timeout=self._sync_timeout_ms / 1000.0 + _SYNC_GRACE_S)
        except queue.Empty:
            return LLMStatusCode.LLM_TIMEOUT, (f"synchronize_layer({layer}) did not return within "
                                               f"{self._sync_timeout_ms} ms (sync_kv_timeout)")
        assert got == layer, (got, layer)  # one producer, layers in order
        if answer is True:
            return None, ""
        if answer is False:
            return LLMStatusCode.LLM_PARAM_INVALID, f"synchronize_layer({layer}) returned False"
        code = answer.status_code if isinstance(answer, LLMException) else LLMStatusCode.LLM_FAILED
        return code, f"synchronize_layer({layer}) raised {type(answer).__name__}: {answer}"

    # -- the push thread --------------------------------------------------------------------
    def _push_layers(self) -> None:
        results: List[Optional[LLMStatusCode]] = [None] * len(self._destinations)
        try:
            self._run(results)
        except BaseException as exc:  # noqa: BLE001 - a bug here must still end the task
            logger.exception("[transfer_cache_async] task %d stopped by an internal error", self._task_id)
            for i, fut in enumerate(self._futures):
                if results[i] is None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(results[i])
            return
        finally:
            self._stop.set()
        for fut, result in zip(self._futures, results):
            fut.set_result(result)

    def _run(self, results: List[Optional[LLMStatusCode]]) -> None:
        for layer in self._layers:
            wanted = [i for i, d in enumerate(self._destinations) if layer in d.src_layers]
            code, why = self._wait_layer(layer)
            if code is not None:
                logger.error("[transfer_cache_async] task %d: %s; %s fail with %s", self._task_id, why,
                             ", ".join(self._destinations[i].name for i in wanted), code.name)
                for i in wanted:
                    results[i] = code
                return
            for i in wanted:
                dest = self._destinations[i]
                try:
                    dest.send(layer, dest.dst_layer_of(layer))
                except LLMException as exc:
                    logger.error("[transfer_cache_async] task %d: layer %d to %s failed: %s", self._task_id,
                                 layer, dest.name, exc)
                    results[i] = exc.status_code
                    return
                except Exception as exc:  # noqa: BLE001 - reported as the destination's failure
                    logger.error("[transfer_cache_async] task %d: layer %d to %s failed: %r", self._task_id,
                                 layer, dest.name, exc)
                    results[i] = LLMStatusCode.LLM_FAILED
                    return
                if layer == dest.src_layers.stop - 1:
                    results[i] = LLMStatusCode.LLM_SUCCESS
        logger.info("[transfer_cache_async] task %d: every layer sent", self._task_id)


def _describe_layers(layers: List[int]) -> str:
    if layers and layers == list(range(layers[0], layers[-1] + 1)):
        return f"[{layers[0]}, {layers[-1] + 1})"
    return str(layers)
