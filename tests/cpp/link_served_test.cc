// SPDX-License-Identifier: Apache-2.0
// What an owner holds for a peer's described transfers (csrc/link/link.h, ServedTransfer): a hold
// past its deadline is dropped by DropExpiredServed (the maintenance loop calls it), and its pin
// released with it; holds within their deadline stay until taken.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>

#include "link/link.h"
#include "test_harness.h"

using namespace llm_datadist;

LLMDD_TEST(LinkServed, HoldsPastTheirDeadlineAreDroppedWithTheirPins) {
  int fds[2];
  ASSERT_TRUE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  LinkSetup setup;
  setup.local_cluster_id = 1;
  setup.peer_cluster_id = 2;
  Link link(std::move(setup), fds[0], nullptr);  // never started: no frames are read
  auto pin = std::make_shared<int>(7);
  ServedTransfer live;
  live.pin = pin;
  live.push = true;
  live.expires = Clock::now() + std::chrono::hours(1);
  ServedTransfer stale = live;
  stale.expires = Clock::now() - std::chrono::milliseconds(1);
  ServedTransfer unbounded;  // a described pull: no deadline of its own
  unbounded.pin = pin;
  link.AddServed(1, live);
  link.AddServed(2, stale);
  link.AddServed(3, unbounded);
  live = stale = unbounded = ServedTransfer{};
  EXPECT_TRUE(pin.use_count() == 4);
  EXPECT_TRUE(link.DropExpiredServed(Clock::now()) == 1);
  EXPECT_TRUE(link.served_count() == 2);
  EXPECT_TRUE(pin.use_count() == 3);
  EXPECT_TRUE(!link.TakeServed(2).has_value());
  EXPECT_TRUE(link.TakeServed(1).has_value());
  EXPECT_TRUE(link.DropExpiredServed(Clock::now() + std::chrono::hours(2)) == 0);  // the pull's has no deadline
  EXPECT_TRUE(link.served_count() == 1);
  close(fds[1]);
}
