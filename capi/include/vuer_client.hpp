// vuer_client.hpp: a header-only C++17 RAII wrapper of vuer_client.h.
//
//   vuer::Client client("ws://localhost:8012");          // throws vuer::Error
//   float pose[3] = {0.f, 0.5f, 0.f};
//   client.publish("SET_POSITION", pose, 3);             // false: queue full
//   if (auto ev = client.recv(100)) std::cout << ev->etype() << "\n";
//
// Client: move-only, closes and frees on destruction. publish() may be
// called from any number of threads at once; recv() from one at a time.
// With Options::realtime_poll_us set, publish() of floats neither
// allocates nor makes a system call (no exception is thrown on that path:
// a full queue returns false).
#ifndef VUER_CLIENT_HPP
#define VUER_CLIENT_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "vuer_client.h"

namespace vuer {

/// A failed call: the status and vuer_last_error()'s message.
class Error : public std::runtime_error {
 public:
  Error(vuer_status status, const char* message)
      : std::runtime_error(message && *message ? message : "vuer_client error"), status_(status) {}
  vuer_status status() const noexcept { return status_; }

 private:
  vuer_status status_;
};

inline void check(vuer_status s) {
  if (s != VUER_OK) throw Error(s, vuer_last_error());
}

/// Connection options (vuer_options), defaults from vuer_options_init.
struct Options : vuer_options {
  Options() noexcept { vuer_options_init(this); }
};

/// An event from the server (owns a vuer_event).
class Event {
 public:
  explicit Event(vuer_event* e) noexcept : e_(e) {}
  std::string_view etype() const noexcept { return vuer_event_etype(e_.get()); }
  /// The event's data (or value) as msgpack bytes.
  std::string_view data() const noexcept {
    size_t n = 0;
    const uint8_t* p = vuer_event_data(e_.get(), &n);
    return p ? std::string_view(reinterpret_cast<const char*>(p), n) : std::string_view();
  }
  /// The whole message as msgpack bytes.
  std::string_view msgpack() const noexcept {
    size_t n = 0;
    const uint8_t* p = vuer_event_msgpack(e_.get(), &n);
    return std::string_view(reinterpret_cast<const char*>(p), n);
  }

 private:
  struct Free {
    void operator()(vuer_event* e) const noexcept { vuer_event_free(e); }
  };
  std::unique_ptr<vuer_event, Free> e_;
};

/// A connection (owns a vuer_client).
class Client {
 public:
  /// Connects (uri empty: env VUER_CLIENT_URI, else ws://localhost:8012).
  explicit Client(const std::string& uri = "", const Options& options = Options()) {
    vuer_client* c = nullptr;
    check(vuer_connect(uri.empty() ? nullptr : uri.c_str(), &options, &c));
    c_.reset(c);
  }

  /// Queues floats as the event's value. reliable=false: latest value wins
  /// per (etype, key). Returns false when the queue is full; throws on any
  /// other error. etype and key must be NUL-terminated (e.g. literals).
  bool publish(const char* etype, const float* values, size_t n, bool reliable = false,
               const char* key = nullptr) const {
    vuer_status s = vuer_publish_floats(c_.get(), etype, key, values, n, reliable ? 1 : 0);
    if (s == VUER_ERR_FULL) return false;
    check(s);
    return true;
  }

  /// Queues a value given as msgpack bytes. As publish() for the rest.
  bool publish_msgpack(const char* etype, std::string_view msgpack, bool reliable = false,
                       const char* key = nullptr) const {
    vuer_status s = vuer_publish_msgpack(c_.get(), etype, key,
                                         reinterpret_cast<const uint8_t*>(msgpack.data()),
                                         msgpack.size(), reliable ? 1 : 0);
    if (s == VUER_ERR_FULL) return false;
    check(s);
    return true;
  }

  /// The next server event within timeout_ms, or nullopt (timeout or
  /// closed).
  std::optional<Event> recv(uint32_t timeout_ms) const {
    vuer_event* e = nullptr;
    vuer_status s = vuer_recv(c_.get(), timeout_ms, &e);
    if (s == VUER_ERR_TIMEOUT || s == VUER_ERR_CLOSED) return std::nullopt;
    check(s);
    return Event(e);
  }

  /// Waits until everything queued is written; false on timeout.
  bool flush(uint32_t timeout_ms) const {
    vuer_status s = vuer_flush(c_.get(), timeout_ms);
    if (s == VUER_ERR_TIMEOUT) return false;
    check(s);
    return true;
  }

  vuer_stats stats() const {
    vuer_stats s{};
    check(vuer_get_stats(c_.get(), &s));
    return s;
  }

  /// Delivers what is queued and closes; throws if events were lost.
  void close() const { check(vuer_close(c_.get())); }

 private:
  struct Free {
    void operator()(vuer_client* c) const noexcept { vuer_free(c); }
  };
  std::unique_ptr<vuer_client, Free> c_;
};

}  // namespace vuer

#endif  // VUER_CLIENT_HPP
