// Exception types of the attune API: one for invalid problems and options, one for I/O, one for
// memory (a working-memory limit exceeded, or an allocation that failed).
#pragma once

#include <stdexcept>
#include <string>

namespace attune {

// Base of every exception attune throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A problem description, option or argument is invalid; the message names the field and value.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A file could not be read or written, or its contents are malformed.
class IoError : public Error {
 public:
  using Error::Error;
};

// A call needs more working memory than its limit allows (refused before allocating), or an
// allocation failed; the message names the size.
class MemoryError : public Error {
 public:
  using Error::Error;
};

}  // namespace attune
