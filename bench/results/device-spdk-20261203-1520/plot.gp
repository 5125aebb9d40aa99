set terminal pngcairo size 900,520 noenhanced font 'DejaVu Sans,10'
set datafile separator '|'
set style fill solid 0.85 border -1
set grid ytics lc rgb '#dddddd'
set key top left
set xrange [0.4:3.6]
set bmargin 4
$throughput << EOD
1|spdk perf\nQD1|6093.4|4623.8|8534.4|0x8e44ad|6,093
2|spdk perf\nQD32|22916.6|18795.8|29494.5|0x8e44ad|22,917
3|nvkv spdk\n1 appender|3722.7|3263.3|3786.6|0x2e9e44|3,723
EOD
$latency << EOD
1|spdk perf\nQD1|22.65|20.58|27.57|8267.62|4133.81|11947.72|22.6|8,268
2|spdk perf\nQD32|120.52|116.58|141.00|16333.59|12250.19|18753.38|120.5|16,334
3|nvkv spdk\n1 appender|25.70|24.08|26.06|12034.05|12034.05|12124.16|25.7|12,034
EOD
set output 'throughput.png'
set title 'Durable writes per second (median of 3, bars min–max; file target; 2026-12-03T15:20:45Z)'
set ylabel 'ops/s'
set yrange [0:33919]
set format y "%'.0f"
unset key
plot $throughput using 1:3:(0.6):6:xtic(2) with boxes lc rgb variable, '' using 1:4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black', '' using 1:5:7 with labels offset 0,0.8
set output 'latency.png'
set title 'Latency per durable write, p50 and p99 (median of 3, bars min–max; file target; 2026-12-03T15:20:45Z)'
set ylabel 'µs (log scale)'
set logscale y
set yrange [10.289:56260.134]
set format y '%g'
set key top left
plot $latency using ($1-0.19):3:(0.36):xtic(2) with boxes lc rgb '0x3b75af' title 'p50', '' using ($1+0.19):6:(0.36) with boxes lc rgb '0xd9822b' title 'p99', '' using ($1-0.19):4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1+0.19):7:(0):($8-$7) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1-0.19):(15.433):9 with labels font ',8' tc rgb 'white' notitle, '' using ($1+0.19):(15.433):10 with labels font ',8' tc rgb 'white' notitle
