#include "worker/device.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/trial_schema.h"

namespace moesweep::worker {
namespace {

// LibTorch's index of GPU `gpu` (as --gpus names it) under the worker's CUDA_VISIBLE_DEVICES:
// its position in that list, or itself when the variable is unset. -1 when it is not listed, or
// the list holds something other than indices (UUIDs).
int InProcessIndex(int gpu, const std::string& visible) {
  if (visible.empty()) return gpu;
  int position = 0;
  size_t start = 0;
  while (start <= visible.size()) {
    const size_t end = std::min(visible.find(',', start), visible.size());
    const std::string item = visible.substr(start, end - start);
    if (item.empty() || item.size() > 9 || item.find_first_not_of("0123456789") != std::string::npos) return -1;
    if (std::stoi(item) == gpu) return position;
    ++position;
    start = end + 1;
  }
  return -1;
}

}  // namespace

Status PlaceTrial(const std::string& device, const std::vector<int>& gpus, bool gpus_managed, int cuda_devices,
                  const std::string& cuda_visible_devices, DevicePlacement* out) {
  DeviceRequest request;
  if (!ParseDevice(device, &request)) {
    return Status::InvalidArgument(fmt::format("config.device: \"{}\" is not one of: cpu, cuda, cuda:N, auto", device));
  }
  DevicePlacement p;
  if (request.kind == DeviceRequest::kCpu) {
    *out = p;
    return Status::Ok();
  }
  const bool is_auto = request.kind == DeviceRequest::kAuto;
  if (cuda_devices <= 0) {
    if (!is_auto) {
      return Status::FailedPrecondition(fmt::format(
          "config.device: \"{}\" needs a GPU, but this worker's LibTorch sees no CUDA device (a CPU-only LibTorch "
          "build, no GPU, or CUDA_VISIBLE_DEVICES hides them); use \"auto\" to fall back to the CPU",
          device));
    }
    p.note = "device auto: no CUDA device on this worker; running on the CPU";
    *out = p;
    return Status::Ok();
  }
  const int nth = request.index < 0 ? 0 : request.index;
  if (gpus_managed) {
    if (gpus.empty()) {
      if (!is_auto) {
        return Status::FailedPrecondition(fmt::format(
            "config.device: \"{}\": the worker gave this trial no GPU (all of its --gpus are busy)", device));
      }
      p.note = "device auto: no GPU of this worker's --gpus is free; running on the CPU";
      *out = p;
      return Status::Ok();
    }
    if (nth >= static_cast<int>(gpus.size())) {
      return Status::InvalidArgument(fmt::format("config.device: \"{}\": the trial has {} GPU(s) (cuda:0 is GPU {})",
                                                 device, gpus.size(), gpus[0]));
    }
    p.index = InProcessIndex(gpus[nth], cuda_visible_devices);
    if (p.index < 0) {
      return Status::FailedPrecondition(fmt::format(
          "config.device: \"{}\" is GPU {} of --gpus, which this worker's CUDA_VISIBLE_DEVICES (\"{}\") does not "
          "list by index",
          device, gpus[nth], cuda_visible_devices));
    }
    if (p.index >= cuda_devices) {
      return Status::FailedPrecondition(fmt::format(
          "config.device: \"{}\" is GPU {} of --gpus, but this worker's LibTorch sees only {} CUDA device(s)", device,
          gpus[nth], cuda_devices));
    }
  } else {
    p.index = nth;
    if (p.index >= cuda_devices) {
      return Status::InvalidArgument(
          fmt::format("config.device: \"{}\": this worker sees {} CUDA device(s)", device, cuda_devices));
    }
  }
  p.cuda = true;
  if (is_auto) p.note = fmt::format("device auto: running on cuda:{}", p.index);
  *out = p;
  return Status::Ok();
}

}  // namespace moesweep::worker
