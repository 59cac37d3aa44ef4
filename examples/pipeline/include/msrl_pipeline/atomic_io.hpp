#pragma once
/// \file The pipeline's names for msrl's crash-safe writers (msrl/core/atomic_file.hpp, where the
/// semantics are documented): write_file_atomic, write_file_atomic_with, write_file_atomic_via,
/// publish_directory_atomic, recover_directory, io_error.
#include <msrl/core/atomic_file.hpp>

namespace msrl_pipeline {

using msrl::io_error;
using msrl::make_io_error;
using msrl::publish_directory_atomic;
using msrl::recover_directory;
using msrl::write_file_atomic;
using msrl::write_file_atomic_via;
using msrl::write_file_atomic_with;

} // namespace msrl_pipeline
