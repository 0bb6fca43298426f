# CMake toolchain for cross building attune for AArch64 (NEON) on a Debian x86-64 host; ctest runs
# the test binaries under qemu-aarch64. Use: cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)  # GoogleTest's project() enables C as well
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Debian's cross sysroot: libraries, headers and packages come from it, programs from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Static executables need no AArch64 loader or libc at run time, so qemu runs them without -L
# or QEMU_LD_PREFIX (and the -L / multiarch ld.so mismatch that hangs at thread creation cannot
# happen). Libraries stay as they are; only the final link of executables changes. The linker's
# "getaddrinfo in statically linked applications" warning comes from GoogleTest's unused
# streaming listener and is harmless here.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

# ctest runs the tests through qemu; without it the cross build still works, the tests cannot run.
find_program(ATTUNE_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(ATTUNE_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${ATTUNE_QEMU_AARCH64})
endif()
