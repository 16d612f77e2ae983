/* Minimal test helpers for the C core tests: no framework, exit code says it all. */
#ifndef SHK_TEST_CHECK_H
#define SHK_TEST_CHECK_H
#include <stdio.h>
#include <stdlib.h>

#include "errors.h"

static int checks_failed;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s (detail: %s)\n", __FILE__, __LINE__, \
                    #cond, shk_error_detail());                                           \
            checks_failed++;                                                              \
        }                                                                                 \
    } while (0)

#define CHECK_EQ(a, b)                                                                    \
    do {                                                                                  \
        long long a_ = (long long)(a), b_ = (long long)(b);                               \
        if (a_ != b_) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld (detail: %s)\n", \
                    __FILE__, __LINE__, #a, a_, #b, b_, shk_error_detail());              \
            checks_failed++;                                                              \
        }                                                                                 \
    } while (0)

#define TEST_MAIN_END()                                                                   \
    do {                                                                                  \
        if (checks_failed) {                                                              \
            fprintf(stderr, "%s: %d check(s) failed\n", __FILE__, checks_failed);         \
            return 1;                                                                     \
        }                                                                                 \
        printf("%s: ok\n", __FILE__);                                                     \
        return 0;                                                                         \
    } while (0)
#endif
