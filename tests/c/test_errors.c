/* The error table (errors.def: every code has its text, values are unique and in the
 * reserved range). */
#include <string.h>

#include "check.h"

static void test_table(void)
{
    static const struct {
        int code;
        const char *text;
    } t[] = {
#define SHK_ERROR(value, name, text, pyclass) {name, text},
#include "errors.def"
#undef SHK_ERROR
    };
    size_t n = sizeof t / sizeof t[0];
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        CHECK(t[i].code <= SHK_ERANGE_FIRST && t[i].code >= SHK_ERANGE_LAST);
        CHECK(strcmp(shk_strerror(t[i].code), t[i].text) == 0);
        for (size_t j = 0; j < i; j++)
            CHECK(t[i].code != t[j].code);
    }
    CHECK_EQ(SHK_ECORRUPT, -30600); /* values are part of the C interface */
    CHECK_EQ(SHK_ENOGROW, -30618);
    CHECK_EQ(SHK_EOBJMISMATCH, -30619);
    CHECK(strcmp(shk_strerror(0), "success") == 0);
    CHECK(strcmp(shk_strerror(-30698), "unknown shmkit error") == 0);
    CHECK(strlen(shk_strerror(2)) > 0); /* errno text */
    CHECK_EQ(shk_fail(SHK_ECORRUPT, "f(): %d is wrong", 7), SHK_ECORRUPT);
    CHECK(strcmp(shk_error_detail(), "f(): 7 is wrong") == 0);
    shk_clear_detail();
    CHECK(strcmp(shk_error_detail(), "") == 0);
}

int main(void)
{
    test_table();
    TEST_MAIN_END();
}
