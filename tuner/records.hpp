// The tuner's files in one include: the JSON lines log (log.hpp), the generated attune_tuned.h
// (header.hpp), their JSON (json.hpp) and file I/O (files.hpp).
#pragma once

#include "files.hpp"
#include "header.hpp"
#include "json.hpp"
#include "log.hpp"
