#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static __thread char detail[512];

const char *shk_strerror(int code)
{
    switch (code) {
    case 0: return "success";
#define SHK_ERROR(value, name, text, pyclass) \
    case name: return text;
#include "errors.def"
#undef SHK_ERROR
    default:
        if (code > 0)
            return strerror(code);
        return "unknown shmkit error";
    }
}

const char *shk_error_detail(void)
{
    return detail;
}

void shk_clear_detail(void)
{
    detail[0] = '\0';
}

int shk_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return code;
}
