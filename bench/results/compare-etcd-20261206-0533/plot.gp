set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,1311.0,867.5,1071.7
16,4828.9,3673.6,3073.2
64,11306.7,6839.0,6409.6
256,22100.0,10943.7,11959.8
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
plot $throughput using 1:2 with linespoints lw 2 pt 5 dt 2 lc rgb '#1f77b4' title 'nvkv, three nodes', $throughput using 1:3 with linespoints lw 2 pt 5 dt 2 lc rgb '#ff7f0e' title 'etcd, three nodes', $throughput using 1:4 with linespoints lw 2 pt 5 dt 2 lc rgb '#2ca02c' title 'nvkv-etcd, three nodes'
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
set yrange [10:502268]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency3 << EOD
put-c1,658.4,1082.4,867.8,1651.7,2623.5,1831.9
put-c16,2678.8,3936.3,4184.1,10190.8,12492.8,11493.4
put-c64,4747.3,8519.7,8814.6,17530.9,24772.6,24199.2
put-c256,8187.9,21315.6,17219.6,35520.5,57311.2,124715.0
range-l,1476.6,6189.1,5005.3,3573.8,28295.2,11968.5
range-s,380.9,3436.5,1288.2,1147.9,29311.0,4845.6
txn,4980.7,18268.2,9338.9,15392.8,84934.7,28426.2
watch,2807.8,1925.1,3121.2,251134.0,10240.0,77856.8
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
