"""What routes receive: settings and the clients opened once per process in the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from tally.api.stores import RawStore
from tally.legacy.forwarder import DualWriter
from tally.legacy.store import LegacyStore
from tally.producer import BatchProducer
from tally.semantic.manifest_file import ManifestFile
from tally.settings import Settings
from tally.storage.aggregate_cache import FinalDays


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _producer(request: Request) -> BatchProducer:
    return request.app.state.producer


def _pg(request: Request) -> AsyncConnectionPool:
    return request.app.state.pg


async def _has_hll(request: Request) -> bool:
    return await request.app.state.pg_has_hll()


def _raw(request: Request) -> RawStore:
    return request.app.state.raw


def _final_days(request: Request) -> FinalDays:
    return request.app.state.final_days


def _named_metrics(request: Request) -> ManifestFile:
    return request.app.state.named_metrics


def _dual_writer(request: Request) -> DualWriter | None:
    return request.app.state.dual_writer


def _legacy(request: Request) -> LegacyStore | None:
    return request.app.state.legacy


SettingsDep = Annotated[Settings, Depends(_settings)]
ProducerDep = Annotated[BatchProducer, Depends(_producer)]
PgPoolDep = Annotated[AsyncConnectionPool, Depends(_pg)]
RawStoreDep = Annotated[RawStore, Depends(_raw)]
HasHllDep = Annotated[bool, Depends(_has_hll)]
FinalDaysDep = Annotated[FinalDays, Depends(_final_days)]
NamedMetricsDep = Annotated[ManifestFile, Depends(_named_metrics)]
# Set only when migrating from a legacy system (TALLY_LEGACY_*), else None.
DualWriterDep = Annotated[DualWriter | None, Depends(_dual_writer)]
LegacyStoreDep = Annotated[LegacyStore | None, Depends(_legacy)]
