# SPDX-License-Identifier: Apache-2.0
"""Engine integrations: the KV connector's engine-neutral core (scheduler half, worker half,
typed metadata, versioned handshake with a layout compatibility hash) and per-peer health
(ACTIVE -> RECOVERING -> RELINKING -> HALTED). Neither torch nor vLLM is imported here.

vLLM's connector is ``llm_datadist.integrations.vllm.LLMDataDistConnector`` (imports vLLM).
"""
from .connector import (ConnectorConfig, ConnectorScheduler, ConnectorWorker, TransferRecord, push_ticket_id,
                        ticket_id_of)
from .health import HealthPolicy, HealthRegistry, PeerHealth, PeerState
from .metadata import (CONNECTOR_VERSION, AgentMetadata, ConnectorMetadata, HandshakePayload, KVCacheLayout,
                       LandingRecord, PushMeta, RemoteMeta, ReqMeta, SendLease, compute_compatibility_hash,
                       decode_handshake, encode_handshake)

__all__ = ["ConnectorConfig", "ConnectorScheduler", "ConnectorWorker", "TransferRecord", "ticket_id_of", "push_ticket_id",
           "HealthPolicy", "HealthRegistry", "PeerHealth", "PeerState", "CONNECTOR_VERSION", "AgentMetadata",
           "ConnectorMetadata", "HandshakePayload", "KVCacheLayout", "LandingRecord", "PushMeta", "RemoteMeta", "ReqMeta", "SendLease",
           "compute_compatibility_hash", "decode_handshake", "encode_handshake"]
