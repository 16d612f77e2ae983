#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static __thread char detail[512];

const char *shk_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case SHK_ECORRUPT: return "shared structure is corrupted";
    case SHK_EVERSION: return "made by an incompatible shmkit layout";
    case SHK_EMISMATCH: return "zone exists with a different size or tag";
    case SHK_EFULL: return "zone is full";
    case SHK_EOWNERDEAD: return "previous owner died holding the lock";
    case SHK_ENOTFOUND: return "no such object in the zone";
    case SHK_EEXISTS: return "object already exists";
    case SHK_ETYPE: return "object exists with a different type";
    case SHK_EBADFREE: return "free of something that is not a live allocation";
    case SHK_EINITDIED: return "the process initialising the zone died";
    case SHK_ENOTREADY: return "zone is not initialised";
    case SHK_ETOOBIG: return "request is larger than the structure can ever hold";
    case SHK_ENOTOWNER: return "lock is not held by the caller";
    case SHK_EBROKEN: return "barrier is broken";
    case SHK_EEMPTY: return "empty";
    case SHK_EFULLQ: return "full";
    case SHK_ECLOSED: return "closed";
    case SHK_ENAME: return "invalid object name";
    case SHK_ENOGROW: return "zone cannot grow any further";
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
