<?php
// A PHP page that talks to a Python daemon through one System V shared memory segment
// (PHP's shmop), found by a key both sides compute with ftok() on the daemon's file.
// Served here by PHP's built-in server (daemon.py starts it); any PHP SAPI works the same.
//
//   GET /page.php?text=...   asks the daemon about `text`, shows its answer and status
//
// The segment (8 KiB, created by daemon.py; integers little-endian):
//   0     8  magic "SHKPHP01"
//   8     8  request number: the page writes the request, then this (last)
//   16    4  request length
//   20       request text (at most 1004 bytes)
//   1024  8  answer number: the request it answers, written last by the daemon
//   1032  4  answer length
//   1036     answer (JSON)
//   4096  8  status version: odd while the daemon rewrites the status (a seqlock)
//   4104  4  status length
//   4108     status (JSON)
// Writing the number after the data is what publishes it (x86-64 keeps stores in order;
// PHP has no atomics or fences to offer).  Pages take turns with flock() on this file,
// since PHP-FPM runs many at once and there is one request slot.

header("Content-Type: application/json");

function u64($bytes) { return unpack("P", $bytes)[1]; }
function fail($code, $why) { http_response_code($code); echo json_encode(["error" => $why]); exit; }

$key = ftok(__DIR__ . "/daemon.py", "S");
$shm = @shmop_open($key, "w", 0, 0);
if ($shm === false)
    fail(503, sprintf("the daemon is not running (no segment with key 0x%08x)", $key));
if (shmop_read($shm, 0, 8) !== "SHKPHP01")
    fail(500, "the segment is not the daemon's");

$text = substr($_GET["text"] ?? "hello from PHP", 0, 1004);

$turn = fopen(__FILE__, "r");
flock($turn, LOCK_EX);
$n = u64(shmop_read($shm, 8, 8)) + 1;
shmop_write($shm, pack("V", strlen($text)), 16);
shmop_write($shm, $text, 20);
shmop_write($shm, pack("P", $n), 8);                 // published: request $n
$deadline = microtime(true) + 5.0;
while (u64(shmop_read($shm, 1024, 8)) !== $n) {
    if (microtime(true) > $deadline)
        fail(504, "the daemon did not answer request $n within 5 s");
    usleep(200);
}
$len = unpack("V", shmop_read($shm, 1032, 4))[1];
$answer = json_decode(shmop_read($shm, 1036, $len), true);
flock($turn, LOCK_UN);

$status = null;
for ($try = 0; $try < 10000 && $status === null; $try++) {
    $v1 = u64(shmop_read($shm, 4096, 8));
    if ($v1 % 2) { usleep(50); continue; }           // the daemon is writing it
    $len = unpack("V", shmop_read($shm, 4104, 4))[1];
    $raw = shmop_read($shm, 4108, $len);
    if (u64(shmop_read($shm, 4096, 8)) === $v1)      // unchanged meanwhile: consistent
        $status = json_decode($raw, true);
}
echo json_encode(["request" => $n, "text" => $text, "answer" => $answer,
                  "status" => $status, "key" => sprintf("0x%08x", $key),
                  "php_pid" => getmypid(), "php" => PHP_VERSION]);
