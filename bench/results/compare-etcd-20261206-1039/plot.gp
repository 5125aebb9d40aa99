set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,1214.5,1011.1,861.1
16,4418.6,3709.3,2824.8
64,11326.4,6276.7,5022.5
256,22945.9,7390.6,10791.2
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
set yrange [10:277873]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency3 << EOD
put-c1,624.6,869.4,991.2,2041.9,2723.8,4317.2
put-c16,2760.7,3895.3,4489.2,17973.2,13877.2,16777.2
put-c64,5173.2,9216.0,9707.5,13303.8,30097.4,54919.2
put-c256,9338.9,29638.7,21839.9,68616.2,121438.2,51609.6
range-l,2166.8,8544.3,8806.4,5001.2,47972.4,19513.3
range-s,571.9,5808.1,2048.0,1530.9,45744.1,6991.9
txn,6623.2,26738.7,13402.1,41910.3,138936.3,117833.7
watch,4083.7,4497.4,5201.9,16957.4,34963.5,21233.7
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
