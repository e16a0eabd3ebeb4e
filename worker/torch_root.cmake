# The `torch` target from a LibTorch tree without its CMake config (-DMOESWEEP_TORCH_ROOT=DIR, DIR
# holding include/ and lib/: a PyTorch wheel's site-packages/torch, or an unpacked libtorch zip).
# TorchConfig.cmake of a CUDA build needs the CUDA toolkit only to describe targets we do not use;
# the worker needs the headers, the libraries, and the C++ ABI they were built with.
set(_root ${MOESWEEP_TORCH_ROOT})
if(NOT EXISTS ${_root}/include/torch/csrc/api/include/torch/torch.h)
  message(FATAL_ERROR "MOESWEEP_TORCH_ROOT=${_root}: no include/torch/csrc/api/include/torch/torch.h there")
endif()
# 1 for every PyTorch >= 2.7 wheel and for the cxx11-abi libtorch zips; Debian's libraries (gRPC,
# Protobuf, fmt) are built with it, so 0 cannot be mixed with them.
set(MOESWEEP_TORCH_CXX11_ABI 1 CACHE STRING "_GLIBCXX_USE_CXX11_ABI of that LibTorch (torch._C._GLIBCXX_USE_CXX11_ABI)")
set(_libs)
foreach(_name torch torch_cpu c10 torch_cuda c10_cuda)
  find_library(_lib_${_name} NAMES ${_name} PATHS ${_root}/lib NO_DEFAULT_PATH)
  if(_lib_${_name})
    # --no-as-needed: nothing here calls into libtorch_cuda directly, but loading it is what
    # registers the CUDA backend (torch::cuda::is_available() is false without it).
    list(APPEND _libs "-Wl,--no-as-needed,${_lib_${_name}},--as-needed")
  elseif(_name MATCHES "^(torch|torch_cpu|c10)$")
    message(FATAL_ERROR "MOESWEEP_TORCH_ROOT=${_root}: lib${_name}.so not found in ${_root}/lib")
  endif()
endforeach()
add_library(torch INTERFACE IMPORTED)
set_target_properties(torch PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${_root}/include;${_root}/include/torch/csrc/api/include"
  INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=${MOESWEEP_TORCH_CXX11_ABI}"
  INTERFACE_LINK_LIBRARIES "${_libs};Threads::Threads"
  INTERFACE_LINK_OPTIONS "-Wl,-rpath,${_root}/lib")
if(_lib_torch_cuda)
  message(STATUS "moesweep worker: LibTorch from ${_root} (with CUDA)")
else()
  message(STATUS "moesweep worker: LibTorch from ${_root} (CPU only)")
endif()
