# Proves the installed package works for a user (CTest:
# "package: find_package(vmmalloc) consumer"):
#   1. cmake --install BUILD_DIR into WORK_DIR/prefix
#   2. configure tests/consumer against it (find_package(vmmalloc)) into
#      WORK_DIR/build, with no CUDA toolkit on its search path, and build it
#   3. run its programs (shared, static, and C)
# Any failure is a FATAL_ERROR (the test fails) showing the command's output.
#
# Script mode: cmake -DSOURCE_DIR=<vmmalloc source> -DBUILD_DIR=<its build>
#   -DWORK_DIR=<scratch, removed first> [-DCONFIG=<config>]
#   [-DGENERATOR=<generator>] [-DMAKE_PROGRAM=<path>] [-DC_COMPILER=<path>]
#   [-DCXX_COMPILER=<path>] [-DSANITIZER_FLAGS="<flags>"]
#   -P check_package.cmake
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS SOURCE_DIR BUILD_DIR WORK_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "check_package.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED CONFIG OR CONFIG STREQUAL "")
  set(CONFIG Release)
endif()

set(prefix "${WORK_DIR}/prefix")
set(consumer_build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# step(NAME COMMAND...): runs a command; on failure shows its output and fails.
function(step name)
  message(STATUS "consumer: ${name}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out
    TIMEOUT 300)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "consumer: ${name} failed (${rc})\n  command: ${cmd}\n${out}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# 1. Install.
step("install ${BUILD_DIR} -> ${prefix}"
  "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}" --config "${CONFIG}")
file(GLOB_RECURSE config_file "${prefix}/*/vmmallocConfig.cmake")
if(NOT config_file)
  message(FATAL_ERROR "consumer: no vmmallocConfig.cmake installed under ${prefix}")
endif()
# The installed targets' include directories are the prefix's include/ only:
# no source tree path (the repository root is vmmalloc::internal's, never
# in the public targets' interface).
file(GLOB_RECURSE targets_files "${prefix}/*/vmmallocTargets.cmake")
if(NOT targets_files)
  message(FATAL_ERROR "consumer: no vmmallocTargets.cmake installed under ${prefix}")
endif()
file(STRINGS "${targets_files}" include_lines REGEX "INTERFACE_INCLUDE_DIRECTORIES")
foreach(line IN LISTS include_lines)
  if(NOT line MATCHES "^ *INTERFACE_INCLUDE_DIRECTORIES \"[$][{]_IMPORT_PREFIX[}]/include\"$")
    message(FATAL_ERROR "consumer: an installed target exports more than include/: ${line}")
  endif()
endforeach()
file(GLOB_RECURSE installed_cuda_h "${prefix}/include/cuda*.h")
if(installed_cuda_h)
  message(FATAL_ERROR "consumer: CUDA headers were installed with the package: ${installed_cuda_h}")
endif()

# 2. Configure and build the consumer against the installed package only.
set(configure_args
  -S "${SOURCE_DIR}/tests/consumer" -B "${consumer_build}"
  "-DCMAKE_PREFIX_PATH=${prefix}"
  "-DCMAKE_BUILD_TYPE=${CONFIG}"
  # Only the install prefix may provide vmmalloc: not the build tree (the
  # user package registry) nor anything else exported.
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(GENERATOR)
  list(APPEND configure_args -G "${GENERATOR}")
endif()
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(C_COMPILER)
  list(APPEND configure_args "-DCMAKE_C_COMPILER=${C_COMPILER}")
endif()
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(SANITIZER_FLAGS)
  # A sanitized library needs the sanitizer runtime in the program too.
  list(APPEND configure_args
    "-DCMAKE_C_FLAGS=${SANITIZER_FLAGS}"
    "-DCMAKE_CXX_FLAGS=${SANITIZER_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${SANITIZER_FLAGS}")
endif()
step("configure tests/consumer (find_package(vmmalloc 0.1))" "${CMAKE_COMMAND}" ${configure_args})
step("build" "${CMAKE_COMMAND}" --build "${consumer_build}" --config "${CONFIG}" --parallel 2)

# 3. Run each program.
foreach(program IN ITEMS consumer_shared consumer_static consumer_c)
  set(candidates "${consumer_build}/${program}" "${consumer_build}/${CONFIG}/${program}")
  set(exe "")
  foreach(candidate IN LISTS candidates)
    if(EXISTS "${candidate}")
      set(exe "${candidate}")
      break()
    endif()
  endforeach()
  if(NOT exe)
    message(FATAL_ERROR "consumer: ${program} was not built (looked in ${candidates})")
  endif()
  step("run ${program}" "${exe}")
  string(STRIP "${step_output}" step_output)
  message(STATUS "${step_output}")
endforeach()

message(STATUS "consumer: the installed package works (shared, static, C)")
