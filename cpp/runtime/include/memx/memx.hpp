// The whole public API of libmemx: #include <memx/memx.hpp>
#pragma once

#include "memx/errors.hpp"
#include "memx/manifest.hpp"
#include "memx/npy.hpp"
#include "memx/runtime.hpp"
#include "memx/sampling.hpp"
#include "memx/snapshot.hpp"
#include "memx/tensor.hpp"

#define MEMX_VERSION_STRING "0.1.0"
