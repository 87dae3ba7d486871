# Runs one interposer test case (cmake -P), for CTest:
#
#   cmake -DPROGRAM=<exe> [-DARGS=a@@b] [-DPRELOAD=<libvmmalloc_preload.so>]
#         [-DCONF=<VMMALLOC_CONF>] [-DEXPECT=re@@re] [-DREJECT=re@@re]
#         [-DCOMPARE_PLAIN=ON] [-DCHECK_SERVED=ON] [-DLIBRARY_PATH=<dir>]
#         -P run_case.cmake
#
# (Lists are joined with @@: a ';' would split the argument in add_test.)
#
# The program runs under `cmake -E env LD_PRELOAD=<PRELOAD>
# VMMALLOC_CONF=<CONF>` (no LD_PRELOAD without PRELOAD). It must exit 0, its
# output (stdout and stderr) must match every EXPECT regex and none of the
# REJECT ones. With COMPARE_PLAIN it first runs WITHOUT the interposer, and
# the lines starting with "result:" on stdout must be the same in both runs
# (stdout and stderr are captured apart, so the interposer's stderr lines
# cannot split a result line). LIBRARY_PATH goes first in LD_LIBRARY_PATH:
# the fake driver's directory for the host cases, so that a machine whose
# LD_LIBRARY_PATH names the real driver's directory still loads the fake.
# With CHECK_SERVED, the interposer's print_stats line must count at least as
# many served allocations (served_allocations=N) as the program reports it
# made ("allocations: N"): every one of them went through vmmalloc.
# A program that exits 77 (no GPU) makes the case print VMM_TEST_SKIPPED,
# which CTest's SKIP_REGULAR_EXPRESSION reports as skipped.

if(NOT PROGRAM)
  message(FATAL_ERROR "run_case.cmake: PROGRAM is not set")
endif()
foreach(list_var ARGS EXPECT REJECT)
  if(DEFINED ${list_var})
    string(REPLACE "@@" ";" ${list_var} "${${list_var}}")
  endif()
endforeach()

# run(<out-var> <with-preload>): runs the program; sets <out-var> to its output.
function(run out_var with_preload)
  set(env_args)
  if(with_preload AND PRELOAD)
    list(APPEND env_args "LD_PRELOAD=${PRELOAD}")
  else()
    list(APPEND env_args "--unset=LD_PRELOAD")
  endif()
  if(DEFINED CONF)
    list(APPEND env_args "VMMALLOC_CONF=${CONF}")
  else()
    list(APPEND env_args "--unset=VMMALLOC_CONF")
  endif()
  if(LIBRARY_PATH)
    list(APPEND env_args "LD_LIBRARY_PATH=${LIBRARY_PATH}:$ENV{LD_LIBRARY_PATH}")
  endif()
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env ${env_args} ${PROGRAM} ${ARGS}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE stdout
    ERROR_VARIABLE stderr)
  set(out "${stdout}${stderr}")
  set(label "plain")
  if(with_preload AND PRELOAD)
    set(label "LD_PRELOAD=${PRELOAD} VMMALLOC_CONF=${CONF}")
  endif()
  message("---- ${PROGRAM} ${ARGS} (${label}): exit ${rc}\n${out}")
  if(rc EQUAL 77)
    message("VMM_TEST_SKIPPED: the program needs a GPU")
    # Ends the script successfully; CTest reports the case as skipped.
    set(skipped TRUE PARENT_SCOPE)
    return()
  endif()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${PROGRAM} exited with ${rc} (${label})")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
  set(${out_var}_stdout "${stdout}" PARENT_SCOPE)
endfunction()

function(result_lines out_var text)
  string(REGEX MATCHALL "result:[^\n]*" lines "${text}")
  set(${out_var} "${lines}" PARENT_SCOPE)
endfunction()

set(skipped FALSE)
if(COMPARE_PLAIN)
  run(plain_out FALSE)
  if(skipped)
    return()
  endif()
endif()
run(out TRUE)
if(skipped)
  return()
endif()

foreach(re IN LISTS EXPECT)
  if(NOT out MATCHES "${re}")
    message(FATAL_ERROR "expected output matching \"${re}\"")
  endif()
endforeach()
foreach(re IN LISTS REJECT)
  if(out MATCHES "${re}")
    message(FATAL_ERROR "output matches the rejected \"${re}\"")
  endif()
endforeach()
if(COMPARE_PLAIN)
  result_lines(plain_results "${plain_out_stdout}")
  result_lines(results "${out_stdout}")
  if(NOT plain_results)
    message(FATAL_ERROR "the plain run printed no result: lines")
  endif()
  if(NOT plain_results STREQUAL results)
    message(FATAL_ERROR "results differ with the interposer:\n  plain:     ${plain_results}\n"
                        "  preloaded: ${results}")
  endif()
  list(LENGTH results n)
  message("the ${n} result: lines are the same with and without the interposer")
endif()

if(CHECK_SERVED)
  if(NOT out MATCHES "allocations: ([0-9]+)")
    message(FATAL_ERROR "the program did not report its allocations")
  endif()
  set(made ${CMAKE_MATCH_1})
  if(NOT out MATCHES "served_allocations=([0-9]+)")
    message(FATAL_ERROR "no print_stats line (served_allocations=...)")
  endif()
  set(served ${CMAKE_MATCH_1})
  if(served LESS made)
    message(FATAL_ERROR "vmmalloc served ${served} allocations of the program's ${made}")
  endif()
  message("vmmalloc served ${served} allocations; the program made ${made}")
endif()
