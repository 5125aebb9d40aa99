set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,4030.7,2011.3,988.0,989.6
16,16796.5,11477.4,4244.6,3994.8
64,28029.7,18446.1,8828.0,7243.2
256,37760.2,22908.3,14376.9,9971.8
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
plot $throughput using 1:2 with linespoints lw 2 pt 7 dt 1 lc rgb '#1f77b4' title 'nvkv, one node', $throughput using 1:3 with linespoints lw 2 pt 7 dt 1 lc rgb '#ff7f0e' title 'etcd, one node', $throughput using 1:4 with linespoints lw 2 pt 5 dt 2 lc rgb '#1f77b4' title 'nvkv, three nodes', $throughput using 1:5 with linespoints lw 2 pt 5 dt 2 lc rgb '#ff7f0e' title 'etcd, three nodes'
unset logscale x
unset xtics
set xtics
set autoscale x
set output
set output 'latency.png'
set terminal png size 1200,650 noenhanced
set multiplot layout 1,2 title 'latency percentiles, medians (µs, log scale)'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [10:155845]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,205.2,452.6,379.4,1003.0
put-c16,677.9,1300.5,2455.6,4431.9
put-c64,1838.1,3117.1,5734.4,11182.1
put-c256,6492.2,10215.4,15654.9,31359.0
range-l,1039.4,4419.6,3569.7,25215.0
range-s,1011.2,4554.8,2836.5,25280.5
txn,2010.1,6852.6,6279.2,33783.8
watch,564.7,693.8,1972.2,5505.0
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv p99' lc rgb '#aec7e8', '' using 5 title 'etcd p99' lc rgb '#ffbb78'
$latency3 << EOD
put-c1,923.1,949.8,2316.3,2021.4
put-c16,3602.4,3698.7,8658.9,11190.3
put-c64,6643.7,8159.2,17678.3,24035.3
put-c256,16605.2,24100.9,40009.7,63340.5
range-l,3987.5,5169.2,11247.6,29245.4
range-s,1593.3,3502.1,4161.5,24592.4
txn,7352.3,15458.3,24723.5,77922.3
watch,1497.1,1864.7,11092.0,12001.3
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv p99' lc rgb '#aec7e8', '' using 5 title 'etcd p99' lc rgb '#ffbb78'
unset multiplot
set output
