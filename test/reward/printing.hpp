#pragma once
// Stream operators so Boost.Test can print msrl enums in failure messages.
#include <ostream>

#include <msrl/reward/labels.hpp>

namespace msrl::reward {
inline std::ostream& operator<<(std::ostream& o, label l) { return o << to_char(l); }
inline std::ostream& operator<<(std::ostream& o, label_format f) { return o << "label_format(" << static_cast<int>(f) << ")"; }
} // namespace msrl::reward
