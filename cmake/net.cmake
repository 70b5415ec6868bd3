# Network backends of conc_queue / conc_dict / conc_lock (.url); included
# by the `foreach(part ...)` loop of CMakeLists.txt, after the targets
# conc_objects, conc and conc_static exist and before the install rules.
#
# Redis: built when hiredis is found (pkg-config hiredis, Debian's
# libhiredis-dev), unless -DCONC_REDIS=OFF; -DCONC_REDIS=ON makes a
# missing hiredis an error (CI).  Without it libconc still builds, and a
# redis:// URL fails at creation with CONC_EINVAL and a detail saying the
# backend was not built.  libconc then links libhiredis (only its RESP
# reader is used):
#   - the shared library privately (its users need nothing);
#   - the static library as a link-only dependency, so its users link
#     -lhiredis too: conc.pc says `Requires.private: hiredis`, and the
#     CMake package (concConfig.cmake) finds hiredis again through
#     pkg-config before it loads the targets (CONC_CONFIG_NEEDS_HIREDIS).
# Everything is set on this project's targets: nothing here reaches a
# project that builds libconc with add_subdirectory, except the imported
# target PkgConfig::HIREDIS, made GLOBAL so that such a project can link
# conc::conc_static from its own directory.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(HIREDIS QUIET IMPORTED_TARGET GLOBAL hiredis)
endif()
set(CONC_REDIS_DEFAULT OFF)
if(HIREDIS_FOUND)
  set(CONC_REDIS_DEFAULT ON)
endif()
set(CONC_REDIS ${CONC_REDIS_DEFAULT} CACHE STRING
    "Build the Redis backend (needs hiredis): ON, OFF; default: when found")
set(CONC_PC_REQUIRES_PRIVATE "")
set(CONC_CONFIG_NEEDS_HIREDIS OFF)
if(CONC_REDIS)
  if(NOT HIREDIS_FOUND)
    message(FATAL_ERROR "CONC_REDIS=ON but hiredis was not found "
                        "(apt-get install libhiredis-dev pkg-config)")
  endif()
  file(GLOB CONC_REDIS_SOURCES CONFIGURE_DEPENDS
       ${CMAKE_CURRENT_SOURCE_DIR}/src/redis/*.c)
  target_sources(conc_objects PRIVATE ${CONC_REDIS_SOURCES})
  target_compile_definitions(conc_objects PRIVATE CONC_HAVE_REDIS=1)
  target_link_libraries(conc_objects PRIVATE PkgConfig::HIREDIS)
  foreach(t conc conc_static)
    target_link_libraries(${t} PRIVATE PkgConfig::HIREDIS)
  endforeach()
  set(CONC_PC_REQUIRES_PRIVATE "hiredis")
  set(CONC_CONFIG_NEEDS_HIREDIS ON)
  message(STATUS "libconc: Redis backend ON (hiredis ${HIREDIS_VERSION})")
else()
  message(STATUS "libconc: Redis backend OFF")
endif()
