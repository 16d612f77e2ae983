// cxx.cpp - shmkit.h from C++ (extern "C"): RAII owners of the handles, a zone, a
// counter, a lock, a queue and a dict; prints "counter 3".  Run with a unique zone name,
// which it removes.
#include <shmkit.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

void check(int r, const char *what)
{
    if (r != 0)
        throw std::runtime_error(std::string(what) + ": " + shmkit_strerror(r) + " (" +
                                 shmkit_error_detail() + ")");
}

struct ZoneClose { void operator()(shmkit_zone *z) const { shmkit_zone_close(z); } };
struct CounterClose { void operator()(shmkit_counter *c) const { shmkit_counter_close(c); } };
struct LockClose { void operator()(shmkit_lock *l) const { shmkit_lock_close(l); } };
struct QueueClose { void operator()(shmkit_queue *q) const { shmkit_queue_close(q); } };
struct DictClose { void operator()(shmkit_dict *d) const { shmkit_dict_close(d); } };

// lock_guard for shmkit_lock; owner_died() says whether the previous holder died
class Guard {
public:
    explicit Guard(shmkit_lock *l) : lock_(l)
    {
        int r = shmkit_lock_acquire(l, SHMKIT_FOREVER);
        owner_died_ = r == SHMKIT_EOWNERDEAD;
        if (!owner_died_)
            check(r, "shmkit_lock_acquire");
    }
    ~Guard() { shmkit_lock_release(lock_); }
    bool owner_died() const { return owner_died_; }
    Guard(const Guard &) = delete;
    Guard &operator=(const Guard &) = delete;

private:
    shmkit_lock *lock_;
    bool owner_died_;
};

}  // namespace

int main(int argc, char **argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s ZONE\n", argv[0]);
        return 2;
    }
    try {
        shmkit_zone *zp = nullptr;
        check(shmkit_zone_open(argv[1], 8 << 20, "c++", 3, nullptr, &zp), "shmkit_zone_open");
        std::unique_ptr<shmkit_zone, ZoneClose> zone(zp);
        shmkit_counter *cp = nullptr;
        check(shmkit_counter_open(zone.get(), "n", 0, SHMKIT_CREATE, &cp), "shmkit_counter_open");
        std::unique_ptr<shmkit_counter, CounterClose> counter(cp);
        shmkit_lock *lp = nullptr;
        check(shmkit_lock_open(zone.get(), "guard", SHMKIT_CREATE, &lp), "shmkit_lock_open");
        std::unique_ptr<shmkit_lock, LockClose> lock(lp);
        for (int i = 0; i < 3; i++) {
            Guard g(lock.get());
            shmkit_counter_add(counter.get(), 1);
        }
        shmkit_queue *qp = nullptr;
        check(shmkit_queue_open(zone.get(), "q", 65536, SHMKIT_CREATE, &qp), "shmkit_queue_open");
        std::unique_ptr<shmkit_queue, QueueClose> queue(qp);
        std::string msg = "from C++";
        check(shmkit_queue_put(queue.get(), msg.data(), msg.size(), 1.0), "shmkit_queue_put");
        char buf[32];
        size_t len = 0;
        check(shmkit_queue_get(queue.get(), buf, sizeof buf, &len, 1.0), "shmkit_queue_get");
        if (std::string(buf, len) != msg)
            throw std::runtime_error("the queue gave back something else");
        shmkit_dict *dp = nullptr;
        check(shmkit_dict_open(zone.get(), "d", 1 << 20, SHMKIT_CREATE, &dp), "shmkit_dict_open");
        std::unique_ptr<shmkit_dict, DictClose> dict(dp);
        int64_t init = 0, v = 0;
        check(shmkit_dict_incr(dict.get(), "k", 1, 2, &init, 0, &v), "shmkit_dict_incr");
        if (v != 2)
            throw std::runtime_error("the dict counted wrong");
        std::printf("counter %lld\n", static_cast<long long>(shmkit_counter_load(counter.get())));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s\n", e.what());
        shmkit_zone_unlink(argv[1]);
        return 1;
    }
    check(shmkit_zone_unlink(argv[1]), "shmkit_zone_unlink");
    return 0;
}
