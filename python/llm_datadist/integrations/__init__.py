# SPDX-License-Identifier: Apache-2.0
"""Engine integrations: a KV connector in the shape of vLLM's v1 KV connector (scheduler half,
worker half, typed metadata, versioned handshake with a layout compatibility hash) and per-peer
health (ACTIVE -> RECOVERING -> RELINKING -> HALTED). Neither torch nor vLLM is imported here.

    from llm_datadist.integrations import (LLMDataDistConnector, KVConnectorRole, ConnectorConfig,
                                           KVCacheLayout, HealthRegistry)
"""
from .connector import (ConnectorConfig, KVConnectorRole, LLMDataDistConnector, LLMDataDistConnectorScheduler,
                        LLMDataDistConnectorWorker, Request, TransferRecord)
from .health import HealthPolicy, HealthRegistry, PeerHealth, PeerState
from .metadata import (CONNECTOR_VERSION, AgentMetadata, ConnectorMetadata, HandshakePayload, KVCacheLayout,
                       RemoteMeta, ReqMeta, WorkerMetadata, compute_compatibility_hash, decode_handshake,
                       encode_handshake)

__all__ = ["ConnectorConfig", "KVConnectorRole", "LLMDataDistConnector", "LLMDataDistConnectorScheduler",
           "LLMDataDistConnectorWorker", "Request", "TransferRecord", "HealthPolicy", "HealthRegistry", "PeerHealth",
           "PeerState", "CONNECTOR_VERSION", "AgentMetadata", "ConnectorMetadata", "HandshakePayload",
           "KVCacheLayout", "RemoteMeta", "ReqMeta", "WorkerMetadata", "compute_compatibility_hash",
           "decode_handshake", "encode_handshake"]
