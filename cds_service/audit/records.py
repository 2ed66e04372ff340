"""Audit records: what the service decided, with no PHI.

A :class:`DecisionRecord` is written for every order the service rated (or declined to rate).
The patient appears only as a keyed hash (:func:`patient_hash`), so that an analyst can group
decisions by patient without the audit log revealing who the patient is; the key lives in the
database (:meth:`cds_service.audit.store.Store.audit_key`) or in ``CDS_AUDIT_HASH_KEY``, never in the
records. Nothing else in a record identifies a person: order codes, a draft-order reference,
scenario and rating, card uuids and summaries generated from the knowledge base.

This module does no I/O; :mod:`cds_service.audit.store` persists the records.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "CardRecord",
    "DecisionRecord",
    "patient_hash",
    "user_hash",
    "instance_name",
    "resolve_audit_key",
]


@dataclass(frozen=True)
class CardRecord:
    """One card returned to the EHR, so that feedback on it can be traced to its decision."""

    uuid: str
    indicator: str
    summary: str
    suggestion_uuids: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecisionRecord:
    """One rated (or unrated) order. ``patient_hash`` is a keyed hash, never a patient id."""

    decided_at: datetime            # UTC (a naive value is taken as UTC)
    service_id: str
    hook: str
    hook_instance: str
    patient_hash: str               # patient_hash(key, patient_id)
    order_codes: tuple[str, ...]    # "system|code" of each coding of the order rated
    order_ref: str | None           # "ServiceRequest/abc"
    scenario_id: str | None
    rating: str | None              # usually-appropriate | may-be-appropriate | usually-not-appropriate
    pama_rating: str | None         # appropriate | not-appropriate | no-criteria-apply
    outcome: str                    # rated | no-criteria-apply | not-rated
    knowledge_version: str
    consult_id: str | None          # urn:uuid:...
    latency_ms: float
    cards: tuple[CardRecord, ...] = ()
    instance: str = ""              # instance_name() of the deciding process
    user_hash: str | None = None    # user_hash(key, context.userId): the ordering clinician, keyed


def patient_hash(key: bytes, patient_id: str) -> str:
    """HMAC-SHA256 of the patient id under ``key``, as 64 lowercase hex digits.

    Keyed (not a plain hash) because patient ids are short and enumerable: without the key
    nobody can test a guessed id against the audit log.
    """
    if not key:
        raise ValueError("patient_hash needs a non-empty key")
    if not isinstance(patient_id, str):
        raise TypeError("patient_id must be a string")
    return hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()


def user_hash(key: bytes, user_id: str) -> str:
    """The ordering clinician (``context.userId``) as a keyed hash, in a domain of its own.

    Prefixed so that a user id equal to some patient id never hashes alike.
    """
    return patient_hash(key, "user:" + user_id)


def instance_name() -> str:
    """``hostname:pid`` of this process (computed per call: gunicorn forks after import)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def resolve_audit_key(configured: str, store: Any) -> bytes:
    """The key for :func:`patient_hash`: ``CDS_AUDIT_HASH_KEY`` when set, else the store's key.

    A configured key is used as its UTF-8 bytes (give at least 32 random characters); all
    instances sharing a database must then be given the same value.
    """
    if configured:
        return configured.encode("utf-8")
    return store.audit_key()
