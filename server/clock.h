// Time source of the coordinator, injectable so lease-expiry tests need not sleep.
#ifndef MOESWEEP_SERVER_CLOCK_H_
#define MOESWEEP_SERVER_CLOCK_H_

#include <atomic>
#include <chrono>

namespace moesweep {

class Clock {
 public:
  virtual ~Clock() = default;
  // Seconds since the Unix epoch.
  virtual double Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  double Now() const override {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
};

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(double start = 1.7e9) : now_(start) {}
  double Now() const override { return now_.load(); }
  void Advance(double seconds) { now_.store(now_.load() + seconds); }

 private:
  std::atomic<double> now_;
};

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_CLOCK_H_
