// SPDX-License-Identifier: Apache-2.0
// The record point of DataDistEngine's transfers (one per operation, around the whole of it) and
// the snapshot that metrics() reports. What is counted: common/metrics.h.
#include "engine/data_dist_engine.h"

namespace llm_datadist {

namespace {
OpKind KindOf(bool push, bool blocks_api) {
  if (push) return blocks_api ? OpKind::kPushBlocks : OpKind::kPushCache;
  return blocks_api ? OpKind::kPullBlocks : OpKind::kPullCache;
}
}  // namespace

void DataDistEngine::Meter(Link *link, OpKind kind, const DetailedStatus &status, uint64_t bytes, uint64_t started) {
  if (!options_.metrics) return;
  const uint64_t elapsed = status.ok() ? MetricsNowNs() - started : 0;
  // The link's (or the unlinked) counters before the totals, and GetMetrics reads them in that
  // order too: a snapshot's totals are never below the sum of its parts.
  (link != nullptr ? link->metrics : unlinked_metrics_).Record(kind, status.code(), bytes, elapsed);
  metrics_.Record(kind, status.code(), bytes, elapsed);
}

DetailedStatus DataDistEngine::Pull(const TransferArgs &args) {
  const uint64_t started = MeterStart();
  TransferOutcome outcome;
  DetailedStatus status = PullUnmetered(args, &outcome);
  Meter(outcome.link.get(), KindOf(false, args.blocks_api), status, outcome.bytes, started);
  return status;
}

DetailedStatus DataDistEngine::Push(const TransferArgs &args) {
  const uint64_t started = MeterStart();
  TransferOutcome outcome;
  DetailedStatus status = PushUnmetered(args, &outcome);
  Meter(outcome.link.get(), KindOf(true, args.blocks_api), status, outcome.bytes, started);
  return status;
}

EngineMetricsSnapshot DataDistEngine::GetMetrics() const {
  EngineMetricsSnapshot out;
  out.enabled = options_.metrics;
  out.cluster_id = cluster_id_;
  out.links_up = links_up_.load(std::memory_order_relaxed);
  out.links_broken = links_broken_.load(std::memory_order_relaxed);
  out.links_closed = links_closed_.load(std::memory_order_relaxed);
  if (links_) {
    links_->ForEachLink([&](Link &link) {
      LinkMetricsSnapshot l;
      l.cluster_id = link.peer_cluster_id();
      l.transport = TransportName(link.transport());
      l.state = link.state() == Link::State::kActive ? "active" : "broken";
      l.channel = link.frames_over_unix() ? "unix" : "tcp";
      l.peer_pid = link.peer_pid();
      l.metrics = link.metrics.Snapshot();
      out.links.push_back(std::move(l));
    });
  }
  out.unlinked = unlinked_metrics_.Snapshot();
  out.totals = metrics_.Snapshot();
  out.host_pool = GetPoolStats(CachePlacement::kHost);
  out.device_pool = GetPoolStats(CachePlacement::kDevice);
  return out;
}

}  // namespace llm_datadist
