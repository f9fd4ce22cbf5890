"""The abuse scenario's rig: ``chatd sim-llm`` and the ``chatd serve`` in front of it, each its
own process, with chatd's ``/metrics`` (read with an operator key, parsed to samples) and the
simulator's counters, and a wait until neither has a request under way."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

import loadgen.rig
from loadgen.rig import rig_running, sim_stats
from loadgen.script import ROOT

__all__ = [
    "CHAT_TIMEOUT_S",
    "LLM_STREAMS_IN_USE",
    "Rig",
    "in_flight",
    "metric_samples",
    "metric_sum",
    "running_rig",
]

CHAT_TIMEOUT_S = 60.0
"""How long one chat on these rigs may take to end (warm-ups, checks, key B's chats)."""
LLM_STREAMS_IN_USE = 'chatd_limiter_in_use{limiter="llm_streams"}'


def metric_samples(exposition: str) -> dict[str, float]:
    """Prometheus text as ``{'name{label="v"}': value}`` (``name`` alone unlabelled)."""
    samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def metric_sum(samples: Mapping[str, float], prefix: str) -> int:
    """The samples whose name (with labels) starts with ``prefix``, summed."""
    return int(sum(v for k, v in samples.items() if k.startswith(prefix)))


def in_flight(samples: Mapping[str, float]) -> int:
    """Requests under way in any state, from :func:`metric_samples`."""
    return metric_sum(samples, "chatd_requests_in_flight{")


@attrs.frozen
class Rig(loadgen.rig.Rig):
    """A simulator and the chatd in front of it (``server``), and chatd's operator key."""

    operator_key: str | None = None

    @property
    def sim_port(self) -> int:
        return int(self.sim_control.rsplit(":", 1)[1])

    @property
    def chatd_port(self) -> int:
        return int(self.server_url.rsplit(":", 1)[1])

    async def metrics(self, http: httpx.AsyncClient) -> dict[str, float]:
        url = self.server_url + "/metrics"
        headers = {"authorization": f"Bearer {self.operator_key}"} if self.operator_key else {}
        response = await http.get(url, headers=headers)
        response.raise_for_status()
        return metric_samples(response.text)

    async def busy(self, http: httpx.AsyncClient, upstream: bool) -> bool:
        """A request under way in chatd, or (with ``upstream``) an answer open upstream."""
        if upstream and (await sim_stats(http, self.sim_control))["active"]:
            return True
        return in_flight(await self.metrics(http)) > 0

    async def until_idle(self, http: httpx.AsyncClient, timeout_s: float, upstream: bool) -> float:
        """Until not :meth:`busy` (at most ``timeout_s``): the seconds that took."""
        started = time.perf_counter()
        with trio.move_on_after(timeout_s):
            while await self.busy(http, upstream):  # noqa: ASYNC110 (other processes: polled)
                await trio.sleep(0.2)
        return round(time.perf_counter() - started, 2)


@contextlib.contextmanager
def running_rig(
    label: str,
    timing: tuple[float, float],
    sim_args: Sequence[str] = (),
    chatd_env: Mapping[str, str] | None = None,
    operator_key: str | None = None,
) -> Iterator[Rig]:
    """``chatd sim-llm`` (at ``timing``: ttft ms, tokens/s; with ``sim_args``) and ``chatd
    serve`` on free ports, each its own process, for the block (:func:`loadgen.rig.rig_running`,
    in a temporary directory named for ``label``); their log tails if it fails."""
    with rig_running(label, ROOT, *timing, chatd_env, sim_args=sim_args) as rig:
        yield Rig(rig.sim, rig.server, operator_key=operator_key)
