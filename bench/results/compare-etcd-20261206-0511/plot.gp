set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,4160.4,1509.6,2868.3
16,19783.1,8738.3,11875.5
64,36238.7,14171.3,18069.7
256,62711.2,18677.9,26604.5
EOD
set output 'throughput.png'
set title 'put throughput against clients (medians)'
set xlabel 'clients (one connection per 10)'
set ylabel 'puts/s'
set logscale x 2
set logscale y
set grid
set key top left
set xtics (1, 16, 64, 256)
set xrange [0.8:320]
plot $throughput using 1:2 with linespoints lw 2 pt 7 dt 1 lc rgb '#1f77b4' title 'nvkv, one node', $throughput using 1:3 with linespoints lw 2 pt 7 dt 1 lc rgb '#ff7f0e' title 'etcd, one node', $throughput using 1:4 with linespoints lw 2 pt 7 dt 1 lc rgb '#2ca02c' title 'nvkv-etcd, one node'
unset logscale x
unset xtics
set xtics
set autoscale x
set output
set output 'latency.png'
set terminal png size 600,650 noenhanced
set multiplot layout 1,1 title 'latency percentiles, medians (µs, log scale)'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [10:103481]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,205.4,591.4,297.5,590.8,1711.1,764.4
put-c16,553.5,1643.5,1047.0,2277.4,6545.4,3285.0
put-c64,1280.0,3971.1,3022.8,5500.9,13623.3,8970.2
put-c256,3326.0,12107.8,9068.5,15253.5,42008.6,28950.5
range-l,367.9,7491.6,1554.4,1385.5,37879.8,3909.6
range-s,261.5,6795.3,1321.0,933.4,32260.1,3586.0
txn,1439.7,11018.2,3387.4,6557.7,51740.7,11345.9
watch,604.2,928.8,704.0,3733.5,8179.7,6557.7
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
