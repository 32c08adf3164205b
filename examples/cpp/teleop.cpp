// Streams joint poses at 1 kHz from a plain thread with the C++ RAII
// wrapper (latest value wins per joint: a slow link sends the newest pose),
// while the main thread prints what the server sends back.
//
//   cargo build --release -p vuer-client-c
//   c++ -std=c++17 -Icapi/include examples/cpp/teleop.cpp
//       target/release/libvuer_client_c.a -lpthread -ldl -lm -o teleop  (one line)
//   VUER_CLIENT_URI=ws://localhost:8012 ./teleop [seconds]
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "vuer_client.hpp"

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  try {
    vuer::Options options;
    options.realtime_poll_us = 500;  // the control thread never makes a system call
    options.max_queued_bytes = 1 << 20;
    vuer::Client client("", options);
    std::atomic<bool> stop{false};
    std::atomic<long> published{0}, full{0};
    std::thread control([&] {
      static const char* joints[] = {"shoulder", "elbow", "wrist"};
      auto next = std::chrono::steady_clock::now();
      for (long tick = 0; !stop.load(std::memory_order_relaxed); tick++) {
        for (int j = 0; j < 3; j++) {
          float t = static_cast<float>(tick) * 0.001f;
          float pose[7] = {std::sin(t + j), std::cos(t + j), 0.1f * j, 0.f, 0.f, 0.f, 1.f};
          if (client.publish("JOINT_POSE", pose, 7, false, joints[j]))
            published.fetch_add(1, std::memory_order_relaxed);
          else
            full.fetch_add(1, std::memory_order_relaxed);
        }
        next += std::chrono::microseconds(1000);
        std::this_thread::sleep_until(next);
      }
    });
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int answers = 0;
    while (std::chrono::steady_clock::now() < end) {
      if (auto ev = client.recv(100)) {
        answers++;
        std::printf("server: %.*s (%zu bytes of data)\n", static_cast<int>(ev->etype().size()),
                    ev->etype().data(), ev->data().size());
      }
    }
    stop = true;
    control.join();
    client.flush(5000);
    vuer_stats s = client.stats();
    client.close();
    std::printf("published %ld joint poses (%ld refused: queue full), %llu written, %llu "
                "coalesced; %d server events\n",
                published.load(), full.load(), (unsigned long long)s.sent,
                (unsigned long long)s.coalesced, answers);
    return published.load() > 0 ? 0 : 2;
  } catch (const vuer::Error& e) {
    std::fprintf(stderr, "vuer error %d: %s\n", static_cast<int>(e.status()), e.what());
    return 1;
  }
}
