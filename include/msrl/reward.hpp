#pragma once
/// \file Umbrella for msrl's verifiable rewards, CMKD selection, voting, replay mixing and
/// benchmark scoring (host only, no third-party dependencies).
#include "reward/accuracy.hpp"
#include "reward/caption.hpp"
#include "reward/compose.hpp"
#include "reward/format.hpp"
#include "reward/labels.hpp"
#include "reward/presets.hpp"
#include "reward/sample.hpp"
#include "reward/tags.hpp"
#include "reward/task.hpp"
#include "voting/benchmarks.hpp"
#include "voting/cmkd.hpp"
#include "voting/vote.hpp"
#include "data/random.hpp"
#include "data/replay.hpp"
