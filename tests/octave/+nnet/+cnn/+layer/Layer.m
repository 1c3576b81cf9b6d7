classdef Layer
    % Octave test double of nnet.cnn.layer.Layer, the superclass of every layer. MATLAB concatenates
    % layers of different classes into a heterogeneous Layer array; Octave cannot, so [l1 l2 ...]
    % returns a nnet.cnn.layer.LayerArray that indexes the same way (layers(i), numel(layers)).
    properties
        Name = ''
    end
    methods

        function out = horzcat(varargin)
            out = nnet.cnn.layer.LayerArray.concat(varargin);
        end

        function out = vertcat(varargin)
            out = nnet.cnn.layer.LayerArray.concat(varargin);
        end

        function [sz, fmt] = outputSize(~, sz, fmt)
            % Size of the output ([C] or [H W C]) given the input size; elementwise layers keep it.
        end

        function Y = predictLayer(layer, X, ~)
            error('hessiancoreTest:notImplemented', 'the test double of %s has no predict', class(layer));
        end

        function [names, values, snames, svalues] = initLearnables(~, ~)
            % Learnable and state parameters (names and initial values) given the input size.
            names = {};
            values = {};
            snames = {};
            svalues = {};
        end

    end
end
