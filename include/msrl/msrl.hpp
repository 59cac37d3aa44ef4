#pragma once
/// \file Umbrella header for the dependency-free parts of msrl.
#include "grpo.hpp"
