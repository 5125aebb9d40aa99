set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,2539.7,1582.2,1625.2
16,7984.3,6277.5,5091.5
64,17877.6,9348.2,8591.4
256,35144.2,12485.0,16524.9
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
set yrange [10:167641]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency3 << EOD
put-c1,328.7,583.7,578.6,941.6,1328.1,1172.5
put-c16,1823.7,2281.5,2719.7,4837.4,7639.0,9592.8
put-c64,3266.6,6201.3,6881.3,9371.6,18464.8,17858.6
put-c256,6307.8,18546.7,13344.8,31735.8,59080.7,83820.5
range-l,1273.9,6193.2,4509.7,2820.1,30769.2,9289.7
range-s,335.1,3350.5,867.8,988.7,32096.3,4423.7
txn,3545.1,15974.4,7458.8,9510.9,76087.3,39518.2
watch,2494.5,921.1,2740.2,5062.7,5349.4,6881.3
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
