// HikariBench.java — HikariCP (Debian's libhikaricp-java 2.7.9, pgJDBC 42.5) in the scenarios of
// `pqxxpool bench`, so the performance issue's comparison with HikariCP is measured here, side by
// side with pqxxpool and the naive pool (bench/hikari.sh runs all three in one sitting).
//
// Same rules as tools/pqxxpool/bench.cpp: a pool of 4 kept full (minimumIdle = maximumPoolSize),
// every acquire timed by two System.nanoTime() reads (recorded into a log-linear histogram),
// runs interleaved, medians of the runs; one JSON line per case with ops/s, acquire p50/p99/max
// and the per-thread ops min/max. Scenarios: cycle (getConnection + close, no query) at 1 and 16
// threads, select1 ("SELECT 1") at 4 and 16 threads, contended ("SELECT pg_sleep(0.001)") at 16.
//
// Usage: java -cp HikariCP.jar:postgresql.jar:slf4j-api.jar:. HikariBench JDBC_URL USER PASSWORD
//        [SECONDS_PER_RUN] [RUNS]
// The password is read from the command line only to hand it to the driver; it is never printed.

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

public final class HikariBench {
  // 64 powers of two × 16 linear sub-buckets: about 6 % resolution, like an HDR histogram.
  static final class Histogram {
    final long[] counts = new long[64 * 16];
    long max;

    void record(long ns) {
      if (ns < 1) ns = 1;
      if (ns > max) max = ns;
      int major = 63 - Long.numberOfLeadingZeros(ns);
      int minor = major >= 4 ? (int) ((ns >>> (major - 4)) & 15) : (int) (ns & 15);
      counts[major * 16 + minor]++;
    }

    void add(Histogram o) {
      for (int i = 0; i < counts.length; i++) counts[i] += o.counts[i];
      max = Math.max(max, o.max);
    }

    long quantile(double q) {
      long total = 0;
      for (long c : counts) total += c;
      if (total == 0) return 0;
      long rank = (long) Math.ceil(q * total);
      long seen = 0;
      for (int i = 0; i < counts.length; i++) {
        seen += counts[i];
        if (seen >= rank) {
          int major = i / 16, minor = i % 16;
          long upper = major >= 4 ? ((16L + minor + 1) << (major - 4)) : (minor + 1);
          return Math.min(upper, max);
        }
      }
      return max;
    }
  }

  static final class Result {
    double opsPerSecond;
    long p50, p99, max, minThread, maxThread;
  }

  static Result run(HikariDataSource ds, int threads, String query, double seconds) throws Exception {
    final AtomicBoolean stop = new AtomicBoolean(false);
    final long[] ops = new long[threads];
    final Histogram[] hist = new Histogram[threads];
    final CountDownLatch ready = new CountDownLatch(threads);
    final CountDownLatch go = new CountDownLatch(1);
    final Exception[] failure = new Exception[1];
    List<Thread> ts = new ArrayList<>();
    for (int t = 0; t < threads; t++) {
      final int me = t;
      hist[me] = new Histogram();
      Thread th = new Thread(() -> {
        try {
          ready.countDown();
          go.await();
          long n = 0;
          while (!stop.get()) {
            long t0 = System.nanoTime();
            try (Connection c = ds.getConnection()) {
              hist[me].record(System.nanoTime() - t0);
              if (query != null) {
                try (Statement s = c.createStatement(); ResultSet r = s.executeQuery(query)) {
                  while (r.next()) { /* read the row */ }
                }
              }
            }
            n++;
          }
          ops[me] = n;
        } catch (Exception e) {
          synchronized (failure) { failure[0] = e; }
        }
      });
      ts.add(th);
      th.start();
    }
    ready.await();
    long start = System.nanoTime();
    go.countDown();
    Thread.sleep((long) (seconds * 1000));
    stop.set(true);
    for (Thread th : ts) th.join();
    double elapsed = (System.nanoTime() - start) / 1e9;
    if (failure[0] != null) throw failure[0];
    Histogram all = new Histogram();
    long total = 0, mn = Long.MAX_VALUE, mx = 0;
    for (int t = 0; t < threads; t++) {
      all.add(hist[t]);
      total += ops[t];
      mn = Math.min(mn, ops[t]);
      mx = Math.max(mx, ops[t]);
    }
    Result r = new Result();
    r.opsPerSecond = total / elapsed;
    r.p50 = all.quantile(0.50);
    r.p99 = all.quantile(0.99);
    r.max = all.max;
    r.minThread = mn;
    r.maxThread = mx;
    return r;
  }

  static double median(double[] v) {
    double[] c = v.clone();
    Arrays.sort(c);
    return c[c.length / 2];
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 3) {
      System.err.println("usage: HikariBench JDBC_URL USER PASSWORD [SECONDS_PER_RUN] [RUNS]");
      System.exit(2);
    }
    double seconds = args.length > 3 ? Double.parseDouble(args[3]) : 3.0;
    int runs = args.length > 4 ? Integer.parseInt(args[4]) : 3;
    HikariConfig cfg = new HikariConfig();
    cfg.setJdbcUrl(args[0]);
    cfg.setUsername(args[1]);
    cfg.setPassword(args[2]);
    cfg.setMaximumPoolSize(4);
    cfg.setMinimumIdle(4);
    cfg.setConnectionTimeout(30_000);
    cfg.setMaxLifetime(55L * 60 * 1000);
    cfg.setPoolName("bench");
    String[][] cases = {
      {"cycle_t1", "1", null}, {"cycle_t16", "16", null},
      {"select1_t4", "4", "SELECT 1"}, {"select1_t16", "16", "SELECT 1"},
      {"contended_t16", "16", "SELECT pg_sleep(0.001)"},
    };
    try (HikariDataSource ds = new HikariDataSource(cfg)) {
      // Warm up the JIT and the pool, as a long-running server would be.
      run(ds, 4, "SELECT 1", 2.0);
      run(ds, 16, null, 2.0);
      for (String[] c : cases) {
        int threads = Integer.parseInt(c[1]);
        double[] opsRuns = new double[runs], p50 = new double[runs], p99 = new double[runs],
            max = new double[runs], minT = new double[runs], maxT = new double[runs];
        for (int i = 0; i < runs; i++) {
          Result r = run(ds, threads, c[2], seconds);
          opsRuns[i] = r.opsPerSecond;
          p50[i] = r.p50;
          p99[i] = r.p99;
          max[i] = r.max;
          minT[i] = r.minThread;
          maxT[i] = r.maxThread;
          System.err.printf(Locale.ROOT, "hikari: %-14s run %d/%d %12.0f ops/s  p50 %d ns  p99 %d ns  max %d ns  threads %d/%d%n",
              c[0], i + 1, runs, r.opsPerSecond, r.p50, r.p99, r.max, r.minThread, r.maxThread);
        }
        int m = 0;  // the run with the median throughput supplies the per-thread spread
        double med = median(opsRuns);
        for (int i = 0; i < runs; i++) if (opsRuns[i] == med) m = i;
        System.out.printf(Locale.ROOT,
            "{\"type\":\"result\",\"case\":\"%s\",\"pool\":\"hikaricp-2.7.9\",\"threads\":%d,\"pool_size\":4,"
                + "\"query\":\"%s\",\"runs\":%d,\"ops_per_s\":%.0f,\"acquire_p50_ms\":%.6g,\"acquire_p99_ms\":%.6g,"
                + "\"acquire_max_ms\":%.6g,\"per_thread_ops_min\":%.0f,\"per_thread_ops_max\":%.0f,"
                + "\"per_thread_ops_ratio\":%.4g}%n",
            c[0], threads, c[2] == null ? "" : c[2], runs, med, median(p50) / 1e6, median(p99) / 1e6,
            median(max) / 1e6, minT[m], maxT[m], maxT[m] > 0 ? minT[m] / maxT[m] : 0.0);
      }
    }
  }
}
