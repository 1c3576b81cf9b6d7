function [net, averageGrad, averageSqGrad] = adamupdate(net, grad, averageGrad, averageSqGrad, iteration, ...
                                                        learnRate, gradDecay, sqGradDecay, epsilon)
    % Octave test double of MATLAB's adamupdate (Deep Learning Toolbox) for a dlnetwork and a
    % Learnables-shaped gradient table (what dlgradient(loss, net.Learnables) returns):
    %   [net, averageGrad, averageSqGrad] = adamupdate(net, grad, averageGrad, averageSqGrad, iteration)
    % with [] moving averages at the first iteration, and the optional learnRate (0.001), gradDecay
    % (0.9), sqGradDecay (0.999), epsilon (1e-8). The update is Adam (Kingma and Ba) with bias correction:
    %   m = gradDecay m + (1 - gradDecay) g,  v = sqGradDecay v + (1 - sqGradDecay) g.^2,
    %   w = w - learnRate (m / (1 - gradDecay^t)) ./ (sqrt(v / (1 - sqGradDecay^t)) + epsilon).
    % Page: https://www.mathworks.com/help/deeplearning/ref/adamupdate.html. The page was not available to
    % check: the defaults and the placement of epsilon are the double's assumption. The tests only use
    % it to train the example's network; their checks do not depend on how it was trained.
    if nargin < 6
        learnRate = 0.001;
    end
    if nargin < 7
        gradDecay = 0.9;
    end
    if nargin < 8
        sqGradDecay = 0.999;
    end
    if nargin < 9
        epsilon = 1e-8;
    end
    tbl = net.Learnables;
    values = tbl.Value;
    g = grad.Value;
    if isempty(averageGrad)
        averageGrad = grad;
        averageGrad.Value = cellfun(@(x) dlarray(zeros(size(x), 'like', extractdata(x))), g, 'UniformOutput', false);
    end
    if isempty(averageSqGrad)
        averageSqGrad = averageGrad;
    end
    m = averageGrad.Value;
    v = averageSqGrad.Value;
    for i = 1:numel(values)
        m{i} = gradDecay .* m{i} + (1 - gradDecay) .* g{i};
        v{i} = sqGradDecay .* v{i} + (1 - sqGradDecay) .* g{i} .* g{i};
        step = (m{i} ./ (1 - gradDecay^iteration)) ./ (sqrt(v{i} ./ (1 - sqGradDecay^iteration)) + epsilon);
        values{i} = values{i} - learnRate .* step;
    end
    averageGrad.Value = m;
    averageSqGrad.Value = v;
    tbl.Value = values;
    net.Learnables = tbl;
end
