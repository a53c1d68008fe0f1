#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "base/rng.h"
#include "test.h"

TEST(f16_round_trips_every_half_value) {
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaNs */
        CHECKF(kiln_f32_to_f16(kiln_f16_to_f32((uint16_t)h)) == h, "half 0x%04x", h);
    }
}

TEST(f16_rounds_to_nearest_even) {
    CHECK_EQ_INT(kiln_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(kiln_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);            /* tie goes to even */
    CHECK_EQ_INT(kiln_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);            /* tie goes to even */
    CHECK_EQ_INT(kiln_f32_to_f16(65520.0f), 0x7c00);                      /* overflow to inf */
    CHECK_EQ_INT(kiln_f32_to_f16(5.9604645e-08f), 0x0001);                /* smallest subnormal */
    CHECK_EQ_INT(kiln_f32_to_f16(-2.0f), 0xc000);
}

TEST(bf16_rounds_to_nearest_even) {
    CHECK_EQ_INT(kiln_f32_to_bf16(1.0f), 0x3f80);
    CHECK(kiln_bf16_to_f32(0x3f80) == 1.0f);
    CHECK_EQ_INT(kiln_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80); /* tie to even */
    CHECK_EQ_INT(kiln_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
}

TEST(rng_below_stays_in_range_and_covers_it) {
    kiln_rng r;
    kiln_rng_seed(&r, 42);
    int seen[7] = {0};
    for (int i = 0; i < 7000; i++) {
        uint64_t x = kiln_rng_below(&r, 7);
        CHECK(x < 7);
        seen[x]++;
    }
    for (int i = 0; i < 7; i++) CHECKF(seen[i] > 850 && seen[i] < 1150, "bucket %d has %d", i, seen[i]);
}

TEST(error_message_can_wrap_the_previous_one) {
    kiln_fail("inner %d", 7);
    kiln_fail("outer: %s", kiln_errmsg());
    CHECK_STR(kiln_errmsg(), "outer: inner 7");
}
