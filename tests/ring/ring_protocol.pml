/*
 * Promela model of the ring's index and sleep/wake protocol (include/kiln/ring.h, src/ring/ring_wait.c), checked
 * with spin. Records are modelled as slots (the byte layout, skip markers and header checks are covered by the C
 * tests); what is modelled is who reads and writes which counter and flag, and when.
 *
 * Producer: local tail t, cached head hc, writes each record and then its commit word (cw: the position + 1 in
 * the model, position ^ key in the code), publishes tail every BATCH commits, before reporting full and before
 * sleeping. The consumer reads a record when the tail covers it or, past the published tail, when its commit word
 * shows it is complete. Consumer: symmetric with head and tail. A side that finds nothing to do raises its sleep flag, re-reads
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
byte cw[CAP];                      /* commit words */

/* publish: store the counter, then (fence) look at the peer's flag and wake it. Without the fence, the flag load
 * may pass every store still in the store buffer: the record, its commit word and the counter. NOFENCE models
 * that by sampling the flag (into f) before those stores, at the start of each iteration. */
#ifdef NOFENCE
#define SAMPLE(peer_sleeping) f = peer_sleeping
#define PUBLISH(counter, local, peer_sleeping, peer_blocked) \
  counter = local; if :: f -> peer_blocked = 0 :: else -> skip fi
#else
#define SAMPLE(peer_sleeping) skip
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
     SAMPLE(cons_sleeping);
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
     cw[t % CAP] = t + 1;                                /* then its commit word (release) */
     t++; i++; pending++;
     if
     :: pending >= BATCH -> PUBLISH(tail, t, cons_sleeping, cons_blocked); pub = t; pending = 0
     :: else -> skip
     fi
  od;
  SAMPLE(cons_sleeping);
  if :: pub != t -> PUBLISH(tail, t, cons_sleeping, cons_blocked) :: else -> skip fi  /* final flush */
}

active proctype consumer() {
  byte rd = 0, pub = 0, tc = 0, got = 0, pending = 0, tt;
  bit f;
  do
  :: got == N -> break
  :: else ->
     SAMPLE(prod_sleeping);
     do
     :: tc > rd -> break
     :: cw[rd % CAP] == rd + 1 -> assert(rd + 1 - pub <= CAP); break  /* committed, not yet published */
     :: else ->
        tc = tail;
        assert(tc - pub <= CAP);
        if
        :: tc > rd -> break
        :: else ->
           FLUSH_BEFORE_SLEEP(if :: pub != rd -> PUBLISH(head, rd, prod_sleeping, prod_blocked); pub = rd; pending = 0 :: else -> skip fi);
           cons_sleeping = 1;
           tt = tail;                                    /* re-read tail and the commit word after the flag */
           if
           :: tt <= rd && cw[rd % CAP] != rd + 1 ->
              atomic { if :: tail == tt -> cons_blocked = 1 :: else -> skip fi };  /* futex_wait on tail */
              (cons_blocked == 0)
           :: else -> skip
           fi;
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
