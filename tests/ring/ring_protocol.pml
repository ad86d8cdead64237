/*
 * Promela model of the ring's index and sleep/wake protocol (include/kiln/ring.h, src/ring/ring_wait.c), checked
 * with spin. Records are modelled as slots (the byte layout, skip markers and header checks are covered by the C
 * tests); what is modelled is who reads and writes which counter and flag, and when.
 *
 * Producer: local tail t, cached head hc, publishes tail every BATCH commits, before reporting full and before
 * sleeping. Consumer: symmetric with head and tail. A side that finds nothing to do raises its sleep flag, re-reads
 * the peer's counter and sleeps with futex semantics (block only if the counter still equals the value read,
 * atomically); a publisher stores its counter, then reads the peer's flag and wakes it.
 *
 * The code orders "store counter; load flag" and "store flag; load counter" with seq_cst fences; under them the
 * accesses behave sequentially consistently, which is what spin explores. Two deliberately broken variants show
 * that the model can fail:
 *   -DNOFENCE  the publisher's flag load passes its counter store (what a store buffer does without the fence):
 *              a lost wake-up, reported by spin as an invalid end state (both sides asleep).
 *   -DNOFLUSH  a side sleeps without publishing its pending batch: a stall when BATCH exceeds the capacity.
 * Checked properties: every record arrives once, in order, never overwritten before it is read (assertions); no
 * deadlock (valid end states); the counters never differ by more than CAP.
 */
#ifndef N
#define N 5
#endif
#ifndef CAP
#define CAP 2
#endif
#ifndef BATCH
#define BATCH 3
#endif

byte tail = 0, head = 0;           /* published counters (free-running; N < 256) */
bit cons_sleeping = 0, prod_sleeping = 0;
bit cons_blocked = 0, prod_blocked = 0; /* in the kernel's futex queue */
byte buf[CAP];

/* publish: store the counter, then (fence) look at the peer's flag and wake it. */
#ifdef NOFENCE
#define PUBLISH(counter, local, peer_sleeping, peer_blocked) \
  f = peer_sleeping; counter = local; if :: f -> peer_blocked = 0 :: else -> skip fi
#else
#define PUBLISH(counter, local, peer_sleeping, peer_blocked) \
  counter = local; if :: peer_sleeping -> peer_blocked = 0 :: else -> skip fi
#endif

#ifdef NOFLUSH
#define FLUSH_BEFORE_SLEEP(x) skip
#else
#define FLUSH_BEFORE_SLEEP(x) x
#endif

active proctype producer() {
  byte t = 0, pub = 0, hc = 0, i = 0, pending = 0, h;
  bit f;
  do
  :: i == N -> break
  :: else ->
     /* acquire: room by the cache, else refresh head, else publish and sleep */
     do
     :: t - hc < CAP -> break
     :: else ->
        hc = head;
        assert(hc <= t && t - hc <= CAP);
        if
        :: t - hc < CAP -> break
        :: else ->
           FLUSH_BEFORE_SLEEP(if :: pub != t -> PUBLISH(tail, t, cons_sleeping, cons_blocked); pub = t; pending = 0 :: else -> skip fi);
           prod_sleeping = 1;
           h = head;                                     /* re-read after raising the flag (fence) */
           atomic { if :: head == h && h == hc -> prod_blocked = 1 :: else -> skip fi };
           (prod_blocked == 0);                          /* futex_wait returns when woken */
           prod_sleeping = 0
        fi
     od;
     buf[t % CAP] = i;                                   /* write the record in place */
     t++; i++; pending++;
     if
     :: pending >= BATCH -> PUBLISH(tail, t, cons_sleeping, cons_blocked); pub = t; pending = 0
     :: else -> skip
     fi
  od;
  if :: pub != t -> PUBLISH(tail, t, cons_sleeping, cons_blocked) :: else -> skip fi  /* final flush */
}

active proctype consumer() {
  byte rd = 0, pub = 0, tc = 0, got = 0, pending = 0, tt;
  bit f;
  do
  :: got == N -> break
  :: else ->
     do
     :: rd != tc -> break
     :: else ->
        tc = tail;
        assert(tc >= rd && tc - pub <= CAP);
        if
        :: rd != tc -> break
        :: else ->
           FLUSH_BEFORE_SLEEP(if :: pub != rd -> PUBLISH(head, rd, prod_sleeping, prod_blocked); pub = rd; pending = 0 :: else -> skip fi);
           cons_sleeping = 1;
           tt = tail;
           atomic { if :: tail == tt && tt == tc -> cons_blocked = 1 :: else -> skip fi };
           (cons_blocked == 0);
           cons_sleeping = 0
        fi
     od;
     assert(buf[rd % CAP] == got);                       /* in order, not overwritten */
     rd++; got++; pending++;                             /* release */
     if
     :: pending >= BATCH -> PUBLISH(head, rd, prod_sleeping, prod_blocked); pub = rd; pending = 0
     :: else -> skip
     fi
  od
}
