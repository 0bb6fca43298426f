// Umbrella header of the attune library.
#pragma once

#include <attune/attention.hpp>
#include <attune/dtype.hpp>
#include <attune/error.hpp>
#include <attune/isa.hpp>
#include <attune/kernel.hpp>
#include <attune/kv_quant.hpp>
#include <attune/mha.hpp>  // declares attune::mha when built with BLAS
#include <attune/paged.hpp>
#include <attune/probes.hpp>
#include <attune/problem.hpp>
#include <attune/stages.hpp>
#include <attune/tuned.hpp>
#include <attune/version.hpp>
