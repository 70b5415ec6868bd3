# The RabbitMQ backend of conc_queue (.url = "amqp://..."); included by
# the `foreach(part ...)` loop of CMakeLists.txt after cmake/net.cmake.
#
# Built when rabbitmq-c is found (pkg-config librabbitmq, Debian's
# librabbitmq-dev), unless -DCONC_AMQP=OFF; -DCONC_AMQP=ON makes a missing
# rabbitmq-c an error (CI).  Without it libconc still builds, and an
# amqp:// URL fails at creation with CONC_EINVAL and a detail saying the
# backend was not built.  Linked as net.cmake links hiredis: privately
# into the shared library, link-only into the static one, whose users
# find librabbitmq through conc.pc (Requires.private) or the CMake
# package (CONC_CONFIG_NEEDS_RABBITMQ).
#
# conc_add_amqp_tests() (called after the tests are defined) adds the
# broker fixture: amqp_broker_start boots one throwaway RabbitMQ
# (tests/amqp_broker.sh) in the build tree before the tests that need it,
# amqp_broker_stop stops it and its epmd after them; those tests run one
# at a time (RESOURCE_LOCK), since some freeze and restart the broker.
#
# Needs from the main CMakeLists.txt: the conc_objects, conc and
# conc_static targets; include after cmake/net.cmake (which sets
# CONC_PC_REQUIRES_PRIVATE).
# The parser of the broker's words needs no rabbitmq-c: always built, so
# its fuzz target (fuzz/fuzz_amqp_maxlen.c) runs in every build.
target_sources(conc_objects PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src/amqp/amqp_parse.c)
find_package(PkgConfig QUIET)
set(CONC_CONFIG_NEEDS_RABBITMQ OFF)
if(PkgConfig_FOUND)
  pkg_check_modules(RABBITMQ QUIET IMPORTED_TARGET GLOBAL librabbitmq)
endif()
set(CONC_AMQP_DEFAULT OFF)
if(RABBITMQ_FOUND)
  set(CONC_AMQP_DEFAULT ON)
endif()
set(CONC_AMQP ${CONC_AMQP_DEFAULT} CACHE STRING
    "Build the RabbitMQ backend (needs rabbitmq-c): ON, OFF; default: when found")
if(CONC_AMQP)
  if(NOT RABBITMQ_FOUND)
    message(FATAL_ERROR "CONC_AMQP=ON but rabbitmq-c was not found "
                        "(apt-get install librabbitmq-dev pkg-config)")
  endif()
  target_sources(conc_objects PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src/amqp/amqp_queue.c)
  target_compile_definitions(conc_objects PRIVATE CONC_HAVE_AMQP=1)
  target_link_libraries(conc_objects PRIVATE PkgConfig::RABBITMQ)
  foreach(t conc conc_static)
    target_link_libraries(${t} PRIVATE PkgConfig::RABBITMQ)
  endforeach()
  if(CONC_PC_REQUIRES_PRIVATE)
    set(CONC_PC_REQUIRES_PRIVATE "${CONC_PC_REQUIRES_PRIVATE}, librabbitmq")
  else()
    set(CONC_PC_REQUIRES_PRIVATE "librabbitmq")
  endif()
  set(CONC_CONFIG_NEEDS_RABBITMQ ON)
  message(STATUS "libconc: RabbitMQ backend ON (rabbitmq-c ${RABBITMQ_VERSION})")
else()
  message(STATUS "libconc: RabbitMQ backend OFF")
endif()

function(conc_add_amqp_tests)
  set(dir ${CMAKE_BINARY_DIR}/amqp-broker)
  add_test(NAME amqp_broker_start
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/amqp_broker.sh start ${dir})
  add_test(NAME amqp_broker_stop
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/amqp_broker.sh stop ${dir})
  set_tests_properties(amqp_broker_start PROPERTIES
    FIXTURES_SETUP amqp_broker TIMEOUT 120)
  set_tests_properties(amqp_broker_stop PROPERTIES
    FIXTURES_CLEANUP amqp_broker TIMEOUT 60)
  foreach(t IN LISTS ARGN)
    if(TEST ${t})
      set_tests_properties(${t} PROPERTIES FIXTURES_REQUIRED amqp_broker
        RESOURCE_LOCK amqp_broker ENVIRONMENT
        "CONC_AMQP_DIR=${dir};CONC_AMQP_SCRIPT=${CMAKE_CURRENT_SOURCE_DIR}/tests/amqp_broker.sh")
    endif()
  endforeach()
endfunction()
