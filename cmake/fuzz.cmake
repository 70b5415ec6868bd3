# Fuzz targets: fuzz/fuzz_<name>.c each define LLVMFuzzerTestOneInput over
# bytes that come from another process or the network.
#
# Always (with the tests): each target is linked with fuzz/replay.c into
# fuzz_replay_<name>, and CTest runs it over fuzz/corpus/<name>/, so every
# saved input is a regression test in every flavour.
#
# -DCONC_FUZZ=ON (clang only): each target is also built as a libFuzzer
# program, fuzz_<name>, with the library instrumented for coverage;
# scripts/fuzz.sh runs them for a bounded time.
option(CONC_FUZZ "Build libFuzzer programs (clang)" OFF)
if(CONC_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "CONC_FUZZ needs clang (CC=clang)")
  endif()
  # Coverage instrumentation for every target of this project (all link
  # conc_flags), the library included; only the fuzz programs link
  # libFuzzer's main.
  target_compile_options(conc_flags INTERFACE -fsanitize=fuzzer-no-link)
endif()

function(conc_add_fuzz_targets)
  file(GLOB fuzz_srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_*.c)
  foreach(src ${fuzz_srcs})
    get_filename_component(stem ${src} NAME_WE)
    string(REGEX REPLACE "^fuzz_" "" name ${stem})
    add_executable(fuzz_replay_${name} ${src} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/replay.c)
    target_link_libraries(fuzz_replay_${name} PRIVATE conc_harness)
    set_target_properties(fuzz_replay_${name} PROPERTIES
      RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz)
    add_test(NAME fuzz_replay_${name}
      COMMAND ${CONC_TEST_WRAPPER} $<TARGET_FILE:fuzz_replay_${name}>
              ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${name})
    set_tests_properties(fuzz_replay_${name} PROPERTIES TIMEOUT 300)
    if(CONC_FUZZ)
      add_executable(fuzz_${name} ${src})
      target_link_libraries(fuzz_${name} PRIVATE conc_harness)
      target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
      set_target_properties(fuzz_${name} PROPERTIES
        RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz)
    endif()
  endforeach()
endfunction()
