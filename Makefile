# kiln — GNU make. `make` builds build/kiln and build/libkiln.a; `make test` runs the test suite;
# `make bench` the benchmarks; `make check-long` the long checks (fuzzing). PORTABLE=1 builds for any
# x86-64 (SIMD kernels are still chosen at run time).
CC      ?= gcc
PORTABLE ?= 0
ifeq ($(PORTABLE),1)
  ARCH := -march=x86-64-v2 -mtune=generic
else
  ARCH := -march=native
endif
BUILD   := build
OPENBLAS_INC := /usr/include/x86_64-linux-gnu/openblas-pthread
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -fopenmp $(ARCH) \
           -Iinclude -Isrc -I$(OPENBLAS_INC) -MMD -MP
LDLIBS  := -fopenmp -lopenblas -ljansson -lpcre2-8 -lxxhash -lmicrohttpd -lm -lpthread

# Kernels for one instruction set are compiled for it whatever ARCH says; dispatch picks them at run time.
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx512vnni

LIB_SRC  := $(shell find src -name '*.c' ! -path 'src/cli/*' | sort)
CLI_SRC  := $(shell find src/cli -name '*.c' | sort)
TEST_SRC := $(shell find tests -maxdepth 1 -name '*.c' | sort)
BENCH_SRC := $(shell find bench -name '*.c' | sort)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
SETUP_OK := $(BUILD)/.setup-ok

.PHONY: all test bench check-long demo clean setup
all: $(BUILD)/kiln $(BUILD)/kiln-test

$(SETUP_OK): scripts/setup.sh
	@mkdir -p $(BUILD)
	@scripts/setup.sh
	@touch $@

$(BUILD)/%.o: %.c | $(SETUP_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/%_avx2.o: %_avx2.c | $(SETUP_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -c $< -o $@
$(BUILD)/%_avx512.o: %_avx512.c | $(SETUP_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -c $< -o $@

$(BUILD)/libkiln.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/kiln: $(CLI_OBJ) $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/kiln-test: $(TEST_OBJ) $(BUILD)/libkiln.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/bench/%: bench/%.c $(BUILD)/libkiln.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# The test runner forks one process per test and ends with "N passed, N failed".
test: all
	$(BUILD)/kiln-test $(T)

bench: all $(BENCH_BIN)
	bench/run.sh

check-long: all
	scripts/check-long.sh

demo: all
	scripts/demo.sh

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
