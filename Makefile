# sessiond — build, test and install.
#
# One Makefile for the whole tree, no recursion: every directory's sources are
# picked up by wildcard, so adding a file never means editing this one.
#
#   make run        install missing packages, build, run sessiond in the foreground
#   make check      install missing packages, build, run every test normally and
#                   again under AddressSanitizer + UBSan
#   make install    binaries, library, header, pkg-config file, man pages
#
# Build output goes to $(BUILD) (build/ by default, build/asan for the
# sanitizer pass), never next to the sources.

VERSION    := 0.1.0
SOVERSION  := 1
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
LIBDIR     ?= $(PREFIX)/lib
INCDIR     ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
BUILD      ?= build
SANITIZE   ?=
RUN_ARGS   ?=

CC         ?= cc
OPT        ?= -O2
CFLAGS     ?= $(OPT) -g
# _GNU_SOURCE: recvmmsg/sendmmsg and friends; everything else is plain C11 + POSIX.
WARN       := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wpointer-arith \
              -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla
ifeq ($(SANITIZE),1)
OPT        := -O1
SANFLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif

# Debian packages: what building needs, and what the test suite runs against.
DEPS_BUILD := libevent-dev libssl-dev libhiredis-dev pkg-config
DEPS_TEST  := check openssl stunnel4 cppcheck clang libclang-rt-14-dev memcached \
              redis-server redis-sentinel nginx-light haproxy
DEPS_BENCH := gnuplot-nox

PKG_CONFIG ?= pkg-config
PKG_CFLAGS  = $(shell $(PKG_CONFIG) --cflags libevent_core libevent_extra openssl hiredis 2>/dev/null)
EVENT_LIBS  = $(shell $(PKG_CONFIG) --libs libevent_core libevent_extra 2>/dev/null)
REDIS_LIBS  = $(shell $(PKG_CONFIG) --libs hiredis 2>/dev/null)
SSL_LIBS    = $(shell $(PKG_CONFIG) --libs openssl 2>/dev/null)
CHECK_LIBS  = $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

ALL_CFLAGS  = $(WARN) $(CFLAGS) $(SANFLAGS) -fPIC -Iproto -Isessiond -Iclient -Itests/lib \
              -DSESSIOND_VERSION='"$(VERSION)"' $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)

PROTO_SRC   := $(wildcard proto/*.c)
DAEMON_SRC  := $(filter-out sessiond/main.c,$(wildcard sessiond/*.c))
CLIENT_SRC  := $(filter-out client/sessionctl.c,$(wildcard client/*.c))
TESTLIB_SRC := $(wildcard tests/lib/*.c)
TEST_SRC    := $(wildcard tests/unit/*.c tests/integration/*.c)
CONTRIB_SRC := $(wildcard contrib/*.c)
BENCH_SRC   := $(wildcard tests/bench/*.c)
FUZZ_SRC    := $(wildcard tests/fuzz/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBPROTO    := $(BUILD)/libproto.a
LIBDAEMON   := $(BUILD)/libsessiond.a
LIBSC_A     := $(BUILD)/libsessionc.a
LIBSC_SO    := $(BUILD)/libsessionc.so.$(SOVERSION)
LIBTEST     := $(BUILD)/libtest.a
SESSIOND    := $(BUILD)/sessiond
SESSIONCTL  := $(if $(wildcard client/sessionctl.c),$(BUILD)/sessionctl)
CONTRIB_BIN := $(patsubst contrib/%.c,$(BUILD)/%,$(CONTRIB_SRC))
TEST_BIN    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_BIN   := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
FUZZ_BIN    := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 10
PCFILE      := $(BUILD)/libsessionc.pc

.PHONY: all deps run check test sanitize bench fuzz fuzz-smoke lint format install uninstall clean
.DEFAULT_GOAL := all
# Keep objects that only feed a test or bench binary (make would delete them as intermediates).
.SECONDARY:

all: $(SESSIOND) $(if $(CLIENT_SRC),$(LIBSC_A) $(LIBSC_SO) $(PCFILE)) $(SESSIONCTL) $(CONTRIB_BIN)

# Installs only the packages that are missing; needs root (or the packages present).
deps:
	@DEPS="$(DEPS_BUILD) $(DEPS_TEST)" tests/deps.sh

run: deps
	@$(MAKE) --no-print-directory $(SESSIOND)
	$(SESSIOND) -f -l 127.0.0.1 -p 54321 $(RUN_ARGS)

# The README's test command: everything, plain and under the sanitizers.
check: deps
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test
	@$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=1 test
	@$(MAKE) --no-print-directory fuzz-smoke

sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=1 test

test: all $(TEST_BIN) $(BENCH_BIN)
	@tests/run.sh $(BUILD)

# Benchmarks print figures; they are not tests (make check runs only a smoke pass).
bench: deps
	@DEPS="$(DEPS_BENCH)" tests/deps.sh
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	tests/bench/run.sh $(BUILD)

# libFuzzer harnesses (clang): each tests/fuzz/NAME.c is built with the codec and
# daemon sources and runs over its seed corpus tests/fuzz/corpus/NAME/.
fuzz: $(FUZZ_BIN)

# A short bounded run of every harness: part of make check.
fuzz-smoke: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	    name=$${f##*/}; mkdir -p build/fuzz/corpus-$$name; \
	    echo "== fuzz $$name ($(FUZZ_SECONDS) s)"; \
	    if ! $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus-$$name \
	        tests/fuzz/corpus/$$name > build/fuzz/$$name.log 2>&1; then \
	        tail -50 build/fuzz/$$name.log; echo "fuzz $$name: FAILED"; exit 1; fi; \
	    grep -E 'stat::number_of_executed_units' build/fuzz/$$name.log; \
	done

build/fuzz/%: tests/fuzz/%.c $(PROTO_SRC) $(DAEMON_SRC) $(wildcard proto/*.h sessiond/*.h)
	@mkdir -p $(@D)
	clang $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    -Iproto -Isessiond -DSESSIOND_VERSION='"$(VERSION)"' $(PKG_CFLAGS) \
	    -o $@ $< $(PROTO_SRC) $(DAEMON_SRC) $(EVENT_LIBS) $(REDIS_LIBS) $(SSL_LIBS)

lint:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,portability,performance \
	    --inline-suppr --suppress=missingIncludeSystem -Iproto -Isessiond -Iclient \
	    proto sessiond client tests contrib

format:
	clang-format -i $(PROTO_SRC) $(wildcard proto/*.h sessiond/*.[ch] client/*.[ch] tests/*/*.[ch] contrib/*.c)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBPROTO): $(call obj,$(PROTO_SRC))
	@rm -f $@
	$(AR) rcs $@ $^

$(LIBDAEMON): $(call obj,$(DAEMON_SRC))
	@rm -f $@
	$(AR) rcs $@ $^

# The client archive carries the codec, so a user links one library.
$(LIBSC_A): $(call obj,$(CLIENT_SRC) $(PROTO_SRC))
	@rm -f $@
	$(AR) rcs $@ $^

$(LIBSC_SO): $(call obj,$(CLIENT_SRC) $(PROTO_SRC)) client/libsessionc.map
	$(CC) -shared -Wl,-soname,libsessionc.so.$(SOVERSION) \
	    -Wl,--version-script=client/libsessionc.map -o $@ $(filter %.o,$^) $(ALL_LDFLAGS) \
	    $(SSL_LIBS) -lpthread
	ln -sf libsessionc.so.$(SOVERSION) $(BUILD)/libsessionc.so

$(PCFILE): client/libsessionc.pc.in Makefile
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCDIR@|$(INCDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' $< > $@

$(LIBTEST): $(call obj,$(TESTLIB_SRC))
	@rm -f $@
	$(AR) rcs $@ $^

$(SESSIOND): $(call obj,sessiond/main.c) $(LIBDAEMON) $(LIBPROTO)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(EVENT_LIBS) $(REDIS_LIBS) $(SSL_LIBS)

$(BUILD)/sessionctl: $(call obj,client/sessionctl.c) $(LIBSC_A)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(SSL_LIBS) -lpthread

$(BUILD)/%: $(BUILD)/obj/contrib/%.o $(LIBSC_A)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(EVENT_LIBS) $(SSL_LIBS) -lpthread

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(LIBTEST) $(if $(CLIENT_SRC),$(LIBSC_A)) $(LIBPROTO)
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(EVENT_LIBS) $(SSL_LIBS) -lpthread -lm

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIBTEST) $(LIBDAEMON) $(if $(CLIENT_SRC),$(LIBSC_A)) $(LIBPROTO)
	@mkdir -p $(@D)
	$(CC) -o $@ $^ $(ALL_LDFLAGS) $(CHECK_LIBS) $(EVENT_LIBS) $(REDIS_LIBS) $(SSL_LIBS) -lpthread

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(SESSIOND) $(DESTDIR)$(SBINDIR)/sessiond
	install -m 0644 man/sessiond.8 $(DESTDIR)$(MANDIR)/man8/sessiond.8
ifneq ($(CLIENT_SRC),)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 0755 $(BUILD)/sessionctl $(DESTDIR)$(BINDIR)/sessionctl
	install -m 0644 $(LIBSC_A) $(DESTDIR)$(LIBDIR)/libsessionc.a
	install -m 0755 $(LIBSC_SO) $(DESTDIR)$(LIBDIR)/libsessionc.so.$(SOVERSION)
	ln -sf libsessionc.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libsessionc.so
	install -m 0644 client/sessionc.h $(DESTDIR)$(INCDIR)/sessionc.h
	install -m 0644 $(PCFILE) $(DESTDIR)$(LIBDIR)/pkgconfig/libsessionc.pc
	install -m 0644 man/sessionctl.1 $(DESTDIR)$(MANDIR)/man1/sessionctl.1
	install -m 0644 man/libsessionc.3 $(DESTDIR)$(MANDIR)/man3/libsessionc.3
endif

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/sessiond $(DESTDIR)$(MANDIR)/man8/sessiond.8 \
	    $(DESTDIR)$(BINDIR)/sessionctl $(DESTDIR)$(LIBDIR)/libsessionc.* \
	    $(DESTDIR)$(INCDIR)/sessionc.h $(DESTDIR)$(LIBDIR)/pkgconfig/libsessionc.pc \
	    $(DESTDIR)$(MANDIR)/man1/sessionctl.1 $(DESTDIR)$(MANDIR)/man3/libsessionc.3

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
