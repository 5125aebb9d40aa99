set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,3338.7,1714.3,2305.5
16,9712.4,6228.2,5645.1
64,16972.2,9566.3,9564.9
256,37849.6,13665.1,18695.9
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
set yrange [10:157942]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency3 << EOD
put-c1,265.5,476.9,392.4,650.2,1485.8,965.6
put-c16,1465.3,2289.7,2570.2,4677.6,7618.6,7327.7
put-c64,3149.8,6123.5,6471.7,12836.9,17547.3,13639.7
put-c256,5804.0,16859.1,13279.2,37093.4,56590.3,41615.4
range-l,1253.4,5529.6,4460.5,2959.4,31408.1,8839.2
range-s,312.8,3584.0,900.6,825.3,30261.2,4321.3
txn,3575.8,16826.4,7688.2,10338.3,78970.9,39354.4
watch,2514.9,937.0,2529.3,6799.4,5390.3,4841.5
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
